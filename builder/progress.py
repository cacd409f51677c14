"""Progress on a terminal: one status line on stderr, redrawn in place, for a build's stages and
its downloads (`fetch  x86_64 [#####.....] 12/48 packages, 3.4 MB downloaded  1.2 s`).

Shown only when stderr is a terminal and info messages are enabled (`--log-level` info or
debug; info is the default on a terminal); otherwise `NULL` stands in and does nothing, so a
piped build prints the per-stage lines (builder/commands/build.py) and no control codes. A log
record clears the line before it is written (builder/logs.py), and the next redraw puts it
back. A ticker thread redraws four times a second so the elapsed time moves during long
stages; it exists only while a line is shown.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from typing import TextIO

_BAR = 20
_TICK_S = 0.25


class NullProgress:
    """The stand-in when nothing is shown: every call does nothing."""

    def start(self, name: str, arch: str = "") -> None:
        pass

    def end(self) -> None:
        pass

    def expect(self, packages: int, nbytes: int, unit: str = "packages") -> None:
        pass

    def package_done(self, nbytes: int) -> None:
        pass

    def downloaded(self, nbytes: int) -> None:
        pass

    def clear(self) -> None:
        pass

    def close(self) -> None:
        pass


NULL = NullProgress()


class Progress(NullProgress):
    """The status line. Thread-safe: fetch reports from its worker threads."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._lock = threading.Lock()
        self._stage = ""
        self._t0 = 0.0
        self._packages = self._done = 0
        self._bytes = self._done_bytes = self._downloaded = 0
        self._unit = "packages"
        self._shown = False
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def start(self, name: str, arch: str = "") -> None:
        with self._lock:
            self._stage = f"{name} {arch}".strip()
            self._t0 = time.monotonic()
            self._packages = self._done = self._bytes = self._done_bytes = 0
            self._downloaded = 0
            self._draw()
        if self._ticker is None:
            self._ticker = threading.Thread(target=self._tick, name="progress", daemon=True)
            self._ticker.start()

    def end(self) -> None:
        with self._lock:
            self._stage = ""
            self._erase()

    def expect(self, packages: int, nbytes: int, unit: str = "packages") -> None:
        """`packages` things of `unit` to do (`nbytes` bytes in all, 0 if not known)."""
        with self._lock:
            self._packages, self._bytes, self._unit = packages, nbytes, unit
            self._draw()

    def package_done(self, nbytes: int) -> None:
        with self._lock:
            self._done += 1
            self._done_bytes += nbytes
            self._draw()

    def downloaded(self, nbytes: int) -> None:
        with self._lock:
            self._downloaded += nbytes

    def clear(self) -> None:
        with self._lock:
            self._erase()

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None
        self.clear()

    def line(self) -> str:
        """The status text (without control codes)."""
        if not self._stage:
            return ""
        parts = [f"{self._stage:<12}"]
        if self._packages:
            filled = _BAR * self._done_bytes // self._bytes if self._bytes else \
                _BAR * self._done // self._packages
            parts.append(f"[{'#' * filled}{'.' * (_BAR - filled)}] "
                         f"{self._done}/{self._packages} {self._unit}")
            if self._downloaded:
                parts[-1] += f", {self._downloaded / 1e6:.1f} MB downloaded"
        parts.append(f"{time.monotonic() - self._t0:.1f} s")
        return "  ".join(parts)

    def _tick(self) -> None:
        while not self._stop.wait(_TICK_S):
            with self._lock:
                if self._stage:
                    self._draw()

    def _draw(self) -> None:
        text = self.line()
        if not text:
            return
        width = shutil.get_terminal_size((80, 24)).columns - 1
        self.stream.write("\r\x1b[K" + text[:width])
        self.stream.flush()
        self._shown = True

    def _erase(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = False


ACTIVE: NullProgress = NULL  # what builder/logs.py clears before a record


def for_build() -> NullProgress:
    """A Progress on stderr when it is a terminal and info is enabled, else NULL; it becomes
    ACTIVE (close() it when the build ends)."""
    import logging

    global ACTIVE
    if not (sys.stderr.isatty() and logging.getLogger("builder").isEnabledFor(logging.INFO)):
        return NULL
    ACTIVE = Progress(sys.stderr)
    return ACTIVE


def done() -> None:
    """Close the ACTIVE progress line (the build is over)."""
    global ACTIVE
    ACTIVE.close()
    ACTIVE = NULL
