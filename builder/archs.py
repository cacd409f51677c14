"""Architecture names, in one table: apko's canonical OCI names, the APK names, and the OCI
platform (architecture, variant) each maps to."""

from __future__ import annotations

from builder.errors import ConfigError

# canonical OCI name -> (APK name, OCI architecture, OCI variant)
ARCHS: dict[str, tuple[str, str, str]] = {
    "386": ("x86", "386", ""),
    "amd64": ("x86_64", "amd64", ""),
    "arm64": ("aarch64", "arm64", ""),
    "arm/v6": ("armhf", "arm", "v6"),
    "arm/v7": ("armv7", "arm", "v7"),
    "loong64": ("loongarch64", "loong64", ""),
    "ppc64le": ("ppc64le", "ppc64le", ""),
    "riscv64": ("riscv64", "riscv64", ""),
    "s390x": ("s390x", "s390x", ""),
}
# Other spellings users and APK repositories use -> canonical OCI name.
_ALIASES = {"i386": "386", **{apk: oci for oci, (apk, _, _) in ARCHS.items() if apk != oci}}


def oci_arch(name: str, where: str = "arch") -> str:
    """Canonical OCI architecture name for an OCI or APK name (`x86_64` -> `amd64`,
    `armv7` -> `arm/v7`); ConfigError naming `where` for an unknown one."""
    name = name.strip()
    canon = _ALIASES.get(name, name)
    if canon not in ARCHS:
        raise ConfigError(f"{where}: unknown architecture {name!r} "
                          f"(known: {', '.join(sorted(ARCHS))})")
    return canon


def apk_arch(name: str) -> str:
    """APK architecture name for an OCI or APK name (`arm64` -> `aarch64`)."""
    return ARCHS[oci_arch(name)][0]


def platform_of(name: str) -> tuple[str, str]:
    """(architecture, variant) of the OCI platform; variant is "" when there is none."""
    _, arch, variant = ARCHS[oci_arch(name)]
    return arch, variant


def parse_archs(names: list[str], where: str = "archs") -> list[str]:
    """Dedupe + sort, as apko does; `all` means every known architecture."""
    if names == ["all"]:
        return sorted(ARCHS)
    return sorted({oci_arch(n, where) for n in names})
