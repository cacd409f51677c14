"""The package record shared by indexes, the resolver and the installed database.

One `Package` per APKINDEX record (or `.PKGINFO`). Field names follow `.PKGINFO`; the
single-letter APKINDEX keys are mapped in `INDEX_FIELDS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from builder import limits
from builder.errors import FormatError

_BAD_NAME_CHARS = frozenset("/\0") | {chr(c) for c in range(33)} | {chr(127)}


def check_identity(name: str, version: str, source: str, name_field: str,
                   version_field: str) -> None:
    """A package name or version that could not be a file name part (`/`, `..` alone, a
    control character or space) is refused: both are joined into `NAME-VERSION.apk` paths
    in repositories and work directories. FormatError naming `source` and the field."""
    for field_name, value in ((name_field, name), (version_field, version)):
        bad = next((c for c in value if c in _BAD_NAME_CHARS), None)
        if bad is not None or value in (".", ".."):
            what = f"holds {bad!r}" if bad is not None else "is a path component"
            raise FormatError(f"{source}: {field_name} {value!r} {what}: not a package "
                              f"{'name' if field_name == name_field else 'version'}")


@dataclass
class Package:
    name: str
    version: str
    arch: str = ""
    checksum: str = ""  # "Q1" + base64(SHA-1 of the control gzip member)
    size: int = 0  # .apk file size
    installed_size: int = 0
    description: str = ""
    url: str = ""
    license: str = ""
    origin: str = ""
    maintainer: str = ""
    build_time: int = 0
    commit: str = ""
    provider_priority: int | None = None
    replaces_priority: int | None = None
    depends: list[str] = field(default_factory=list)
    provides: list[str] = field(default_factory=list)
    install_if: list[str] = field(default_factory=list)
    replaces: list[str] = field(default_factory=list)
    triggers: list[str] = field(default_factory=list)
    datahash: str = ""  # hex SHA-256 of the data gzip section (from .PKGINFO)
    # Where the record came from: repository URL/path and its @tag ("" when untagged).
    repository: str = ""
    repository_tag: str = ""

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.version}.apk"

    def __str__(self) -> str:
        return f"{self.name}-{self.version}"


# APKINDEX letter -> (attribute, kind). kind: "str", "int", "list" (space separated).
INDEX_FIELDS: dict[str, tuple[str, str]] = {
    "C": ("checksum", "str"),
    "P": ("name", "str"),
    "V": ("version", "str"),
    "A": ("arch", "str"),
    "S": ("size", "int"),
    "I": ("installed_size", "int"),
    "T": ("description", "str"),
    "U": ("url", "str"),
    "L": ("license", "str"),
    "o": ("origin", "str"),
    "m": ("maintainer", "str"),
    "t": ("build_time", "int"),
    "c": ("commit", "str"),
    "k": ("provider_priority", "int"),
    "D": ("depends", "list"),
    "p": ("provides", "list"),
    "i": ("install_if", "list"),
    "r": ("replaces", "list"),
    "q": ("replaces_priority", "int"),
}
# The order melange/go-apk write index records in (optional empty fields omitted).
INDEX_WRITE_ORDER = "CPVASITULomtcDipk"


def parse_index_text(text: str, source: str = "APKINDEX") -> list[Package]:
    """Parse the text of an APKINDEX (records separated by blank lines, `X:value` lines).

    Unknown lower-case fields are ignored (as apk-tools does); unknown upper-case fields and
    records without P/V are errors naming `source` and the line.
    """
    packages: list[Package] = []
    current: dict[str, str] = {}
    line_of: dict[str, int] = {}  # letter -> the line it was (last) given on
    start_line = 1

    def flush(lineno: int) -> None:
        if not current:
            return
        if not current.get("P") or not current.get("V"):  # absent or empty
            raise FormatError(f"{source}:{start_line}: index record without P: or V:")
        check_identity(current["P"], current["V"], f"{source}:{start_line}", "P:", "V:")
        pkg = Package(name=current["P"], version=current["V"])
        for letter, value in current.items():
            attr, kind = INDEX_FIELDS[letter]
            if kind == "int":
                try:
                    setattr(pkg, attr, int(value) if value else 0)
                except ValueError:
                    raise FormatError(
                        f"{source}:{line_of.get(letter, lineno)}: field {letter}: is not an "
                        f"integer: {value[:40]!r}"
                    ) from None
            elif kind == "list":
                setattr(pkg, attr, value.split())
            else:
                setattr(pkg, attr, value)
        packages.append(pkg)

    cap = limits.current().field_size
    for lineno, line in enumerate(text.splitlines(), 1):
        if len(line) > cap:
            limits.check(f"{source}:{lineno}", f"index line ({line[:2]!r}...)", "field-size",
                         len(line))
        if not line.strip():
            flush(lineno)
            current = {}
            line_of.clear()
            start_line = lineno + 1
            continue
        if len(line) < 2 or line[1] != ":":
            raise FormatError(f"{source}:{lineno}: malformed index line {line[:40]!r}")
        letter, value = line[0], line[2:]
        if letter not in INDEX_FIELDS:
            if letter.isupper():
                raise FormatError(f"{source}:{lineno}: unknown index field {letter}:")
            continue
        line_of[letter] = lineno
        if letter in current and INDEX_FIELDS[letter][1] == "list":
            current[letter] += " " + value  # repeated D:/p:/i: lines accumulate (apk-tools)
        else:
            current[letter] = value
    flush(len(text.splitlines()))
    return packages


def format_index_record(pkg: Package) -> str:
    """One APKINDEX record (without the separating blank line), melange field order."""
    lines = []
    for letter in INDEX_WRITE_ORDER:
        attr, kind = INDEX_FIELDS[letter]
        value = getattr(pkg, attr)
        if kind == "list":
            if not value:
                continue
            text = " ".join(value)
        elif kind == "int":
            if value is None or (value == 0 and letter in "k"):
                continue
            text = str(value)
        else:
            if not value and letter not in "CPVA":
                continue
            text = value
        lines.append(f"{letter}:{text}")
    return "\n".join(lines) + "\n"
