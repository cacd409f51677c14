"""Size limits on what packages and indexes may make the builder inflate or hold.

Every limit has a name, a default that no real package or index reaches, and is set with
`--limit NAME=VALUE` on `build`, `publish`, `resolve` and `lock` (sizes take a K/M/G/T
suffix, powers of 1024). Input that passes a limit is refused while it is being read —
inflated bytes are counted as they stream, never held whole first — with a LimitError
naming the file, the limit and the flag that raises it.

The active limits are process-wide (`current()`): the command line installs them once
(`install`), tests and library callers scope them with `using(...)`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import NamedTuple

from builder.errors import FormatError

KIB, MIB, GIB, TIB = 1 << 10, 1 << 20, 1 << 30, 1 << 40


class Limits(NamedTuple):
    """The limits of one build (names on the command line: underscores as dashes). A
    NamedTuple, not a dataclass: this module is imported on every command's start-up, and
    `dataclasses` would bring `inspect` and `ast` with it."""

    # Inflated bytes of one package's data section (its data tar).
    data_size: int = 32 * GIB
    # Inflated bytes of one package's signature or control section (.PKGINFO and scripts).
    control_size: int = 64 * MIB
    # Bytes of one .PKGINFO or APKINDEX line (a field's key and value).
    field_size: int = 1 * MIB
    # Inflated bytes of one APKINDEX.tar.gz.
    index_size: int = 512 * MIB
    # Entries (headers) in one package's data tar.
    entries: int = 1_000_000


# What each limit counts, for help texts and errors.
DESCRIPTIONS = {
    "data-size": "inflated bytes of one package's data section",
    "control-size": "inflated bytes of one package's signature or control section",
    "field-size": "bytes of one .PKGINFO or APKINDEX line",
    "index-size": "inflated bytes of one APKINDEX.tar.gz",
    "entries": "entries in one package's data tar",
}
SIZE_LIMITS = frozenset({"data-size", "control-size", "field-size", "index-size"})
NAMES = tuple(f.replace("_", "-") for f in Limits._fields)

_SUFFIX = {"": 1, "K": KIB, "M": MIB, "G": GIB, "T": TIB}


class LimitError(FormatError):
    """Input passed one of the limits (names the file, the limit and how to raise it)."""

    def __init__(self, where: str, what: str, name: str, value: int) -> None:
        super().__init__(f"{where}: {what} exceeds the {name} limit ({show(name, value)}); "
                         f"raise it with --limit {name}=VALUE")
        self.where, self.what, self.name, self.value = where, what, name, value

    def __reduce__(self) -> tuple[type[LimitError], tuple[str, str, str, int]]:
        return (LimitError, (self.where, self.what, self.name, self.value))


def show(name: str, value: int) -> str:
    """A limit's value as written on the command line (`32G`, `64M`, `1000000`)."""
    if name in SIZE_LIMITS:
        for suffix in "TGMK":
            unit = _SUFFIX[suffix]
            if value >= unit and value % unit == 0:
                return f"{value // unit}{suffix}"
    return str(value)


def parse_value(name: str, text: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if m is None or (m[2] and name not in SIZE_LIMITS):
        unit = " (a K/M/G/T suffix allowed)" if name in SIZE_LIMITS else ""
        raise ValueError(f"--limit {name}: expected a whole number{unit}, got {text!r}")
    value = int(m[1]) * _SUFFIX[m[2].upper()]
    if value <= 0:
        raise ValueError(f"--limit {name}: must be positive, got {text!r}")
    return value


def parse(items: list[str] | None, base: Limits | None = None) -> Limits:
    """`--limit NAME=VALUE` items -> Limits (ValueError naming the item when wrong)."""
    out = base or Limits()
    for item in items or ():
        name, sep, text = item.partition("=")
        name = name.strip().lower().replace("_", "-")
        if not sep or name not in DESCRIPTIONS:
            raise ValueError(f"--limit {item!r}: expected NAME=VALUE with NAME one of "
                             f"{', '.join(NAMES)}")
        out = out._replace(**{name.replace("-", "_"): parse_value(name, text)})
    return out


def help_text() -> str:
    """The `--limit` flag's help: every limit with its default."""
    d = Limits()
    return "raise a limit (repeatable): " + "; ".join(
        f"{n} ({DESCRIPTIONS[n]}, default {show(n, getattr(d, n.replace('-', '_')))})"
        for n in NAMES)


_current = Limits()


def current() -> Limits:
    """The limits in force."""
    return _current


def install(limits: Limits) -> None:
    """Make `limits` the process's limits (the command line does this once)."""
    global _current
    _current = limits


@contextlib.contextmanager
def using(limits: Limits) -> Iterator[Limits]:
    """`limits` in force for the duration of the block."""
    global _current
    before = _current
    _current = limits
    try:
        yield limits
    finally:
        _current = before


def check(where: str, what: str, name: str, amount: int) -> None:
    """LimitError when `amount` passes limit `name` of the current limits."""
    value = getattr(_current, name.replace("-", "_"))
    if amount > value:
        raise LimitError(where, what, name, value)
