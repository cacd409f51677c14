"""APK version strings and dependency constraints, compared the way apk-tools does.

Version grammar (apk-tools 2.14 / 3.x): ``digits{.digits}{letter}{_suffix{digits}}...{~hash}{-rN}``.

Comparison walks both strings token by token:

* the first number is compared numerically; later ``.N`` components numerically too, unless
  either side has a leading zero, then as strings (Gentoo rule: ``1.01 < 1.1``, ``1.001 < 1.01``);
* letters by character, suffixes by rank ``_alpha < _beta < _pre < _rc < (none) < _cvs <
  _svn < _git < _hg < _p``, suffix numbers and ``-rN`` numerically, ``~hash`` as strings;
* when one side runs out first, the longer one is greater, except that a pre-release suffix
  makes it smaller (``1.0_rc1 < 1.0 < 1.0.1``, ``1.0 < 1.0-r1``).

Invalid versions are not rejected by `compare_versions` (apk-tools does not either): tokens
are compared up to the first invalid spot and an invalid tail sorts *below* any valid
continuation, two invalid tails compare equal. `is_valid_version` tells them apart.
Divergence: numbers of any length compare by value (apk-tools parses them into 64 bits);
they are kept as digit strings (`_number`), so a 5,000-digit component is no error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from builder.errors import FormatError

# Token kinds in grammar order; apk-tools relies on this order when one side ends first.
_INITIAL, _DIGIT, _LETTER, _SUFFIX, _SUFFIX_NO, _HASH, _REVISION, _END, _INVALID = range(9)

_SUFFIXES = {"alpha": -4, "beta": -3, "pre": -2, "rc": -1, "cvs": 1, "svn": 2, "git": 3,
             "hg": 4, "p": 5}
_DIGITS_RE = re.compile(r"[0-9]*")
_SUFFIX_RE = re.compile(r"[a-z]*")
_HEX_RE = re.compile(r"[0-9a-fA-F]*")

Token = tuple[int, object]


def _number(digits: str) -> tuple[int, str]:
    """A digit string as a key in numeric order, without int() (which refuses more than
    4,300 digits): (how many digits after leading zeros, those digits), length first."""
    stripped = digits.lstrip("0")
    return len(stripped), stripped


@lru_cache(maxsize=65536)
def _tokens(version: str) -> tuple[Token, ...]:
    """Split a version into (kind, value) tokens, ending with an _END or _INVALID token."""
    out: list[Token] = []
    m = _DIGITS_RE.match(version)
    assert m is not None
    if not m.group():
        return ((_INVALID, None),)
    out.append((_INITIAL, _number(m.group())))
    pos, prev, n = m.end(), _INITIAL, len(version)
    while pos < n:
        ch = version[pos]
        kind: int = _INVALID
        value: object = None
        if "a" <= ch <= "z":
            if prev <= _DIGIT:
                kind, value, pos = _LETTER, ch, pos + 1
        elif ch == "." or "0" <= ch <= "9":
            start = pos + 1 if ch == "." else pos
            if ch == "." and prev <= _DIGIT:
                kind = _DIGIT
            elif ch != "." and prev == _SUFFIX:
                kind = _SUFFIX_NO
            if kind != _INVALID:
                m = _DIGITS_RE.match(version, start)
                assert m is not None
                if not m.group():
                    kind = _INVALID
                else:
                    value = m.group() if kind == _DIGIT else _number(m.group())
                    pos = m.end()
        elif ch == "_":
            if prev <= _SUFFIX_NO:
                m = _SUFFIX_RE.match(version, pos + 1)
                assert m is not None
                if m.group() in _SUFFIXES:
                    kind, value, pos = _SUFFIX, _SUFFIXES[m.group()], m.end()
        elif ch == "~":
            if prev < _HASH:
                m = _HEX_RE.match(version, pos + 1)
                assert m is not None
                if m.group():
                    kind, value, pos = _HASH, m.group(), m.end()
        elif ch == "-":
            if prev < _REVISION and version.startswith("-r", pos):
                m = _DIGITS_RE.match(version, pos + 2)
                assert m is not None
                if m.group():
                    kind, value, pos = _REVISION, _number(m.group()), m.end()
        if kind == _INVALID:
            out.append((_INVALID, None))
            return tuple(out)
        out.append((kind, value))
        prev = kind
    out.append((_END, None))
    return tuple(out)


def is_valid_version(version: str) -> bool:
    """True when `version` follows the apk version grammar."""
    return _tokens(version)[-1][0] == _END


def _cmp(a: object, b: object) -> int:
    # Tokens of one kind hold values of one ordered type (str, int or (int, str)): the kind
    # tag says which, which mypy cannot follow from `object`.
    return (a > b) - (a < b)  # type: ignore[operator]


def _token_cmp(kind: int, a: object, b: object) -> int:
    if kind == _DIGIT:
        sa, sb = str(a), str(b)
        if sa[0] == "0" or sb[0] == "0":
            return _cmp(sa, sb)  # leading zero: string order, like a decimal fraction
        return _cmp(_number(sa), _number(sb))
    return _cmp(a, b)


def _compare(a: str, b: str, fuzzy: bool) -> int:
    ta, tb = _tokens(a), _tokens(b)
    i = 0
    while True:
        ka, va = ta[i]
        kb, vb = tb[i]
        if ka != kb or ka >= _END:
            break
        r = _token_cmp(ka, va, vb)
        if r:
            return r
        i += 1
    if ka == kb:
        return 0
    if fuzzy and kb == _END:
        return 0  # b is a token prefix of a
    if ka == _SUFFIX and isinstance(va, int) and va < 0:  # (a suffix's value is an int)
        return -1
    if kb == _SUFFIX and isinstance(vb, int) and vb < 0:
        return 1
    return -1 if ka > kb else 1


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as version `a` is older than, equal to or newer than `b`."""
    return _compare(a, b, False)


# Constraint operators: canonical spelling -> (less, equal, greater, fuzzy) bits.
_LESS, _EQUAL, _GREATER, _FUZZY = 1, 2, 4, 8
_CHECKSUM = _LESS | _GREATER
_OP_MASKS = {
    "": _LESS | _EQUAL | _GREATER,
    "<": _LESS,
    "<=": _LESS | _EQUAL,
    "=": _EQUAL,
    ">=": _GREATER | _EQUAL,
    ">": _GREATER,
    "~": _EQUAL | _FUZZY,
    ">~": _GREATER | _EQUAL | _FUZZY,
    "<~": _LESS | _EQUAL | _FUZZY,
    "><": _CHECKSUM,
}
_MASK_OPS = {mask: op for op, mask in _OP_MASKS.items()}
_CHAR_BITS = {"<": _LESS, ">": _GREATER, "=": _EQUAL, "~": _EQUAL | _FUZZY}
_CONSTRAINT_RE = re.compile(
    r"(?P<conflict>!)?(?P<name>[^<>=~@!\s]+)(?:@(?P<tag>[^<>=~@\s]+))?"
    r"(?:(?P<op>[<>=~]+)(?P<version>[^@\s]*))?(?:@(?P<tag2>[^<>=~@\s]+))?"
)


@dataclass(frozen=True)
class Constraint:
    """One dependency: ``[!]name[@tag][op version]``.

    `op` is canonical: ``""`` (any version), ``= < <= > >=``, ``~`` (fuzzy: the version's
    leading tokens equal `version`, so ``~2.2`` takes 2.2 and 2.2.1 but not 2.20), ``>~``/``<~``
    (fuzzy-or-greater/less), ``><`` (apk-tools' checksum pin: `version` holds a package's
    ``Q1…`` identity, as apk writes for packages added from a file). ``=~`` and ``~=`` are
    read as ``~``. `conflict` (``!name``) means no provider matching the rest may be installed.
    """

    name: str
    op: str = ""
    version: str = ""
    tag: str = ""
    conflict: bool = False

    def matches(self, version: str | None, checksum: str = "") -> bool:
        """Whether a provider offering `version` falls in this constraint's version range.

        ``None`` stands for an unversioned provide (``p:name`` without ``=``): it only meets
        the any-version form. The `conflict` flag is ignored here (see `allows`); ``><``
        compares `checksum` instead of the version.
        """
        if self.op == "":
            return True
        if self.op == "><":
            return bool(checksum) and checksum == self.version
        if version is None:
            return False
        mask = _OP_MASKS[self.op]
        r = _compare(version, self.version, bool(mask & _FUZZY))
        return bool(mask & (_LESS if r < 0 else _GREATER if r > 0 else _EQUAL))

    def allows(self, version: str | None, checksum: str = "") -> bool:
        """apk-tools' "is provided": a requirement is met / a conflict is not violated."""
        hit = self.matches(version, checksum)
        return not hit if self.conflict else hit

    def __str__(self) -> str:
        tag = f"@{self.tag}" if self.tag else ""
        return f"{'!' if self.conflict else ''}{self.name}{tag}{self.op}{self.version}"


@lru_cache(maxsize=65536)
def parse_constraint(text: str) -> Constraint:
    """Parse ``[!]name[@tag][<op>version]`` (apko's ``name<op>version@tag`` order is accepted too).

    Raises FormatError naming the text when the operator or version is invalid.
    """
    m = _CONSTRAINT_RE.fullmatch(text.strip())
    if m is None:
        raise FormatError(_bad(text))
    tag = m.group("tag") or ""
    if m.group("tag2"):
        if tag:
            raise FormatError(_bad(text))
        tag = m.group("tag2")
    op, version = m.group("op") or "", m.group("version") or ""
    if op:
        mask = 0
        for ch in op:
            mask |= _CHAR_BITS[ch]
        if mask not in _MASK_OPS:
            raise FormatError(_bad(text))
        op = _MASK_OPS[mask]
        if op == "" or not version:
            raise FormatError(_bad(text))
        if op != "><" and not is_valid_version(version):
            raise FormatError(_bad(text))
    return Constraint(m.group("name"), op, version, tag, m.group("conflict") is not None)


def _bad(text: str) -> str:
    return f"{text!r} is not a valid dependency, format is [!]name[@tag][<>~=version]"
