"""The one logger configuration of `apkimage`: `--log-level` as apko's (debug, info, warn,
error), timestamps and levels on stderr; without the flag, info on a terminal and only
warnings and errors when stderr is piped."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from builder import progress

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
          "warning": logging.WARNING, "error": logging.ERROR}
# apko's labels (charmbracelet/log: the level name cut to four letters).
_NAMES = {logging.DEBUG: "DEBU", logging.INFO: "INFO", logging.WARNING: "WARN",
          logging.ERROR: "ERRO", logging.CRITICAL: "FATA"}


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        record.levelname = _NAMES.get(record.levelno, record.levelname)
        return super().format(record)


class _Stderr(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a record is logged (not when configured)."""

    _apkimage: bool  # set on the handler configure() installs, to find it again

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass

    def emit(self, record: logging.LogRecord) -> None:
        progress.ACTIVE.clear()  # a status line on the terminal gives way to the record
        super().emit(record)


def parse_level(text: str) -> int:
    """`--log-level` value -> logging level (case-insensitive, as apko's)."""
    try:
        return LEVELS[text.lower()]
    except KeyError:
        raise ValueError(f"--log-level: {text!r} is not one of debug, info, warn, error") \
            from None


def configure(level: str | None) -> None:
    """Install the handler on the `builder` logger (idempotent: a second call replaces it)."""
    if level is None:
        lvl = logging.INFO if sys.stderr.isatty() else logging.WARNING
    else:
        lvl = parse_level(level)
    logger = logging.getLogger("builder")
    for h in list(logger.handlers):
        if getattr(h, "_apkimage", False):
            logger.removeHandler(h)
    handler = _Stderr()
    handler._apkimage = True
    handler.setFormatter(_Format("%(asctime)s %(levelname)s %(message)s", "%Y/%m/%d %H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(lvl)
