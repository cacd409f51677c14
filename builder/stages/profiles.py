"""Implementation profiles and `--impl`: which implementation runs each stage.

    --impl reference                      every stage: reference
    --impl fast                           the optimised implementations (PROFILES["fast"])
    --impl stitched                       fast, with the stitched layer format
    --impl reference,compress=zlib:9      a profile, then per-stage overrides

Profiles are data (`PROFILES`). `--layer-format` applies between the profile and the
overrides. Every choice is checked before anything runs (`check`): unknown names, and
combinations whose requirements (`Impl.requires`) another stage's choice does not provide,
are a ConfigError naming both stages.
"""

from __future__ import annotations

from builder.errors import ConfigError
from builder.spans import STAGES
from builder.stages.registry import Registry, current
from builder.stages.spec import CAPABILITIES

_FAST = {"fetch": "fast", "expand": "fast", "install": "fast", "layer": "fast",
         "compress": "isal-mt", "publish": "parallel"}
# The stitched layer format: the layer and what it is built from; ISA-L level 2 compresses
# the bytes it cannot reuse (part of its bytes).
STITCHED_FORMAT = {"layer": "stitched", "expand": "fast", "install": "fast",
                   "compress": "isal:2"}
PROFILES: dict[str, dict[str, str]] = {
    "reference": {},
    "fast": _FAST,
    "stitched": {**_FAST, **STITCHED_FORMAT},
}
LAYER_FORMATS = ("sorted", "stitched")


def parse_impl(spec: str, layer_format: str | None = None,
               registry: Registry | None = None) -> dict[str, str]:
    """`--impl` value (and `--layer-format`) -> {stage: implementation name} for every
    stage, checked."""
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if not parts:
        raise ConfigError("--impl: empty value")
    profile = "reference"
    overrides: dict[str, str] = {}
    for i, part in enumerate(parts):
        stage, sep, name = part.partition("=")
        if not sep:
            if i != 0:
                raise ConfigError(f"--impl: {part!r}: the profile must come first")
            profile = part
            continue
        if stage not in STAGES:
            raise ConfigError(f"--impl: unknown stage {stage!r} (stages: {', '.join(STAGES)})")
        overrides[stage] = name
    if profile not in PROFILES:
        raise ConfigError(f"--impl: unknown profile {profile!r} "
                          f"(profiles: {', '.join(PROFILES)})")
    if layer_format not in (None, *LAYER_FORMATS):
        raise ConfigError(f"--layer-format: {layer_format!r} is not one of "
                          f"{', '.join(LAYER_FORMATS)}")
    chosen = {stage: "reference" for stage in STAGES}
    chosen.update(PROFILES[profile])
    if layer_format == "stitched":
        chosen.update(STITCHED_FORMAT)
    elif layer_format == "sorted" and profile == "stitched":
        chosen.update(PROFILES["fast"])
    chosen.update(overrides)
    check(chosen, registry)
    return chosen


def check(chosen: dict[str, str], registry: Registry | None = None) -> None:
    """Every stage's choice exists and every requirement is met by the stage it names."""
    reg = registry or current()
    impls = {stage: reg.get(stage, chosen[stage]) for stage in STAGES}
    for stage, impl in impls.items():
        for other, capability in impl.requires.items():
            if capability in impls[other].provides:
                continue
            providers = [i.name for i in reg.stage(other).impls if capability in i.provides]
            hint = f" (use {other}={' or '.join(providers)})" if providers else ""
            raise ConfigError(
                f"--impl: {stage}={impl.name} needs {CAPABILITIES[capability]} from the "
                f"{other} stage; {other}={impls[other].name} does not provide that{hint}")


def describe(registry: Registry | None = None) -> str:
    """The stages' implementations and the profiles (for `--help`)."""
    reg = registry or current()
    lines = []
    for spec in reg.stages():
        lines.append(f"  {spec.name}:")
        for impl in sorted(spec.impls, key=lambda i: i.name):
            lines.append(f"    {impl.name:12} {impl.help}")
        for form in spec.parametric_help:
            lines.append(f"    {form}")
    lines.append("profiles:")
    for name, picks in PROFILES.items():
        shown = ", ".join(f"{k}={v}" for k, v in picks.items()) or "every stage: reference"
        lines.append(f"  {name:10} {shown}")
    return "\n".join(lines)
