"""`.PKGINFO`: `key = value` lines, `#` comments, repeated keys allowed (depend, provides...)."""

from __future__ import annotations

from builder import limits
from builder.apk.model import Package, check_identity
from builder.errors import FormatError

# .PKGINFO key -> (Package attribute, kind). "list" keys may repeat and each value may hold
# several space-separated items.
PKGINFO_FIELDS: dict[str, tuple[str, str]] = {
    "pkgname": ("name", "str"),
    "pkgver": ("version", "str"),
    "arch": ("arch", "str"),
    "pkgdesc": ("description", "str"),
    "url": ("url", "str"),
    "builddate": ("build_time", "int"),
    "size": ("installed_size", "int"),
    "origin": ("origin", "str"),
    "commit": ("commit", "str"),
    "maintainer": ("maintainer", "str"),
    "license": ("license", "str"),
    "depend": ("depends", "list"),
    "provides": ("provides", "list"),
    "install_if": ("install_if", "list"),
    "replaces": ("replaces", "list"),
    "triggers": ("triggers", "list"),
    "provider_priority": ("provider_priority", "optint"),
    "replaces_priority": ("replaces_priority", "optint"),
    "datahash": ("datahash", "str"),
}
# Order written by `format_pkginfo` for a Package (close to what melange writes).
PKGINFO_WRITE_ORDER = [
    "pkgname",
    "pkgver",
    "arch",
    "size",
    "origin",
    "pkgdesc",
    "url",
    "commit",
    "builddate",
    "maintainer",
    "license",
    "depend",
    "provides",
    "install_if",
    "replaces",
    "provider_priority",
    "replaces_priority",
    "triggers",
    "datahash",
]


def parse_pkginfo(text: str, source: str) -> dict[str, list[str]]:
    """Parse `.PKGINFO` text into {key: [values in order]}."""
    fields: dict[str, list[str]] = {}
    cap = limits.current().field_size
    for lineno, line in enumerate(text.splitlines(), 1):
        if len(line) > cap:
            limits.check(f"{source}:{lineno}", f"line ({line.partition('=')[0].strip()[:40]})",
                         "field-size", len(line))
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key or " " in key:
            raise FormatError(f"{source}:{lineno}: malformed .PKGINFO line {line[:60]!r}")
        fields.setdefault(key, []).append(value.strip())
    return fields


def pkginfo_to_package(fields: dict[str, list[str]], source: str = ".PKGINFO") -> Package:
    """The Package described by parsed `.PKGINFO` fields (checksum/size are not in it)."""
    for required in ("pkgname", "pkgver"):
        if not fields.get(required) or not fields[required][-1]:  # (the last one counts)
            raise FormatError(f"{source}: missing {required}")
    check_identity(fields["pkgname"][-1], fields["pkgver"][-1], source, "pkgname", "pkgver")
    pkg = Package(name=fields["pkgname"][-1], version=fields["pkgver"][-1])
    for key, values in fields.items():
        spec = PKGINFO_FIELDS.get(key)
        if spec is None or not values:
            continue
        attr, kind = spec
        if kind == "list":
            setattr(pkg, attr, [item for v in values for item in v.split()])
            continue
        value = values[-1]
        if kind in ("int", "optint"):
            if value == "" and kind == "optint":
                continue
            try:
                setattr(pkg, attr, int(value or 0))
            except ValueError:
                raise FormatError(f"{source}: field {key} is not an integer: {value!r}") from None
        else:
            setattr(pkg, attr, value)
    return pkg


def package_to_pkginfo(pkg: Package) -> dict[str, list[str]]:
    """`.PKGINFO` fields for a Package (empty optional fields omitted, url kept)."""
    fields: dict[str, list[str]] = {}
    for key in PKGINFO_WRITE_ORDER:
        attr, kind = PKGINFO_FIELDS[key]
        value = getattr(pkg, attr)
        if kind == "list":
            if value:
                fields[key] = list(value)
        elif kind == "optint":
            if value is not None:
                fields[key] = [str(value)]
        elif kind == "int":
            if value or key == "size":
                fields[key] = [str(value)]
        elif value or key in ("pkgname", "pkgver", "arch", "url"):
            fields[key] = [value]
    return fields


def format_pkginfo(fields: dict[str, list[str]] | Package, header: str = "") -> str:
    """`.PKGINFO` text: one `key = value` line per value, keys in the given order."""
    if isinstance(fields, Package):
        fields = package_to_pkginfo(fields)
    lines = [f"# {line}" for line in header.splitlines()]
    for key, values in fields.items():
        if not key or "=" in key or any(c.isspace() for c in key):
            raise FormatError(f".PKGINFO: invalid key {key!r}")
        for value in values:
            if "\n" in value:
                raise FormatError(f".PKGINFO: value of {key} contains a newline")
            lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"
