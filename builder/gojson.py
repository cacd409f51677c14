"""JSON bytes exactly as Go's `encoding/json` writes them.

Go distinguishes maps (keys sorted) from structs (fields in declaration order, some with
`omitempty`). Here a `dict` is a Go map and a `Struct` is a Go struct:

    Struct([("schemaVersion", 2), ("mediaType", mt), ("annotations", {...})],
           omitempty={"annotations"})

Other values: `None` -> null, bool, int, float (Go's shortest formatting, exponent form below
1e-6 and from 1e21), str (HTML-safe escaping: `<`, `>`, `&`, U+2028, U+2029 as `\\u....`;
other non-ASCII kept as UTF-8; lone surrogates become `\\ufffd`), bytes -> base64 (Go's
`[]byte`), list/tuple -> array, `Raw` -> embedded verbatim.

`dumps` is `json.Marshal`; `dumps_encoder` is `json.Encoder.Encode` (adds `\\n`), optionally
with `SetIndent("", indent)`.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable
from json.encoder import encode_basestring
from typing import Any

from builder.errors import FormatError

_HTML = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


class Struct:
    """An ordered set of fields, serialised in the given order (a Go struct).

    Fields named in `omitempty` are dropped when Go would consider them empty: None, False,
    0, "", or an empty list/dict/bytes. A `Struct` value is never empty (as in Go).
    """

    __slots__ = ("fields",)

    def __init__(
        self, fields: Iterable[tuple[str, Any]] = (), *, omitempty: Iterable[str] = ()
    ) -> None:
        omit = frozenset(omitempty)
        self.fields: list[tuple[str, Any]] = [
            (k, v) for k, v in fields if not (k in omit and is_empty(v))
        ]

    def __repr__(self) -> str:
        return f"Struct({self.fields!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Struct) and self.fields == other.fields

    def get(self, key: str, default: Any = None) -> Any:
        for k, v in self.fields:
            if k == key:
                return v
        return default


class Raw(bytes):
    """Pre-encoded JSON, inserted verbatim (Go's json.RawMessage, assumed compact)."""


def is_empty(v: Any) -> bool:
    """Go's omitempty test."""
    if v is None or v is False:
        return True
    if isinstance(v, Struct):
        return False
    if isinstance(v, int | float) and not isinstance(v, bool):
        return v == 0
    if isinstance(v, str | bytes | list | tuple | dict):
        return len(v) == 0
    return False


def encode_string(s: str) -> str:
    """A JSON string literal as Go writes it (HTML-safe)."""
    out = encode_basestring(s).translate(_HTML)
    try:
        out.encode("utf-8")
    except UnicodeEncodeError:
        out = "".join("\\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in out)
    return out


def format_float(f: float) -> str:
    """Go's float64 encoding: shortest round-trip digits, 'f' form unless tiny or huge."""
    if math.isnan(f) or math.isinf(f):
        raise FormatError(f"json: unsupported float value {f!r}")
    if f == 0:
        return "-0" if math.copysign(1.0, f) < 0 else "0"
    sign = "-" if f < 0 else ""
    mant, _, exp_s = repr(abs(f)).partition("e")  # repr gives the shortest round-trip digits
    int_part, _, frac_part = mant.partition(".")
    raw = int_part + frac_part  # value = 0.raw * 10**point
    point = len(int_part) + (int(exp_s) if exp_s else 0)
    stripped = raw.lstrip("0")
    point -= len(raw) - len(stripped)
    digits = stripped.rstrip("0")
    a = abs(f)
    if a < 1e-6 or a >= 1e21:
        e = point - 1
        m = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        # strconv writes at least two exponent digits; encoding/json then trims "e-07" to "e-7".
        return f"{sign}{m}e-{-e}" if e < 0 else f"{sign}{m}e+{e:02d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return f"{sign}{digits}{'0' * (point - len(digits))}"
    return f"{sign}{digits[:point]}.{digits[point:]}"


def _encode(v: Any, out: list[str], indent: str, level: int) -> None:
    if isinstance(v, str):
        out.append(encode_string(v))
    elif isinstance(v, Struct):
        _encode_object(v.fields, out, indent, level)
    elif isinstance(v, dict):
        try:
            keys = sorted(v, key=lambda k: k.encode("utf-8", "surrogatepass"))
        except AttributeError:
            raise FormatError(f"json: map keys must be strings, got {list(v)[:3]!r}") from None
        _encode_object([(k, v[k]) for k in keys], out, indent, level)
    elif v is None:
        out.append("null")
    elif v is True:
        out.append("true")
    elif v is False:
        out.append("false")
    elif isinstance(v, int):
        out.append(str(int(v)))
    elif isinstance(v, float):
        out.append(format_float(v))
    elif isinstance(v, Raw):
        out.append(bytes(v).decode("utf-8"))
    elif isinstance(v, bytes | bytearray):
        out.append('"' + base64.b64encode(bytes(v)).decode("ascii") + '"')
    elif isinstance(v, list | tuple):
        if not v:
            out.append("[]")
            return
        out.append("[")
        for i, item in enumerate(v):
            if i:
                out.append(",")
            if indent:
                out.append("\n" + indent * (level + 1))
            _encode(item, out, indent, level + 1)
        if indent:
            out.append("\n" + indent * level)
        out.append("]")
    else:
        raise FormatError(f"json: cannot encode value of type {type(v).__name__}")


def _encode_object(items: list[tuple[str, Any]], out: list[str], indent: str, level: int) -> None:
    if not items:
        out.append("{}")
        return
    out.append("{")
    sep = ": " if indent else ":"
    for i, (k, item) in enumerate(items):
        if i:
            out.append(",")
        if indent:
            out.append("\n" + indent * (level + 1))
        out.append(encode_string(k))
        out.append(sep)
        _encode(item, out, indent, level + 1)
    if indent:
        out.append("\n" + indent * level)
    out.append("}")


def dumps(obj: Any, indent: str = "") -> bytes:
    """`json.Marshal(obj)` (or `MarshalIndent(obj, "", indent)`), as UTF-8 bytes."""
    out: list[str] = []
    _encode(obj, out, indent, 0)
    return "".join(out).encode("utf-8")


def dumps_encoder(obj: Any, indent: str = "") -> bytes:
    """`json.NewEncoder(w).Encode(obj)` (with `SetIndent("", indent)`): adds a newline."""
    return dumps(obj, indent) + b"\n"
