"""Stage implementation selection: profiles (`reference`, `fast`) and per-stage overrides.

Each stage with interchangeable implementations has a module `builder/stages/<stage>.py`
exposing `IMPLEMENTATIONS` (name -> callable, one shared interface per stage), optionally
`FAST` (the name the `fast` profile picks) and `parametric(name)` for implementations that
take a parameter (`compress=zlib:9`).

    --impl reference                      every stage: reference
    --impl fast                           every stage: its FAST implementation (error if none)
    --impl stitched                       fast, with the `stitched` layer format
    --impl reference,compress=zlib:9      a profile, then per-stage overrides
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

from builder.errors import ConfigError
from builder.spans import STAGES

PROFILES = ("reference", "fast", "stitched")


def stage_module(stage: str) -> ModuleType | None:
    """The implementation module of `stage`, or None if the stage has a single fixed one."""
    try:
        return importlib.import_module(f"builder.stages.{stage}")
    except ModuleNotFoundError as exc:
        if exc.name == f"builder.stages.{stage}":
            return None
        raise


def available(stage: str) -> list[str]:
    """Implementation names of `stage` (plain names; parametric forms described separately)."""
    mod = stage_module(stage)
    if mod is None:
        return ["reference"]
    return sorted(getattr(mod, "IMPLEMENTATIONS", {"reference": None}))


def describe() -> str:
    """One line per stage listing its implementations (for `--help`)."""
    lines = []
    for stage in STAGES:
        names = available(stage)
        mod = stage_module(stage)
        extra = getattr(mod, "PARAMETRIC_HELP", []) if mod is not None else []
        fast = getattr(mod, "FAST", None) if mod is not None else None
        shown = [f"{n} (fast)" if n == fast else n for n in names] + list(extra)
        lines.append(f"  {stage:9} {', '.join(shown)}")
    return "\n".join(lines)


def parse_impl(spec: str) -> dict[str, str]:
    """`--impl` value -> {stage: implementation name} for every stage."""
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
        raise ConfigError(f"--impl: unknown profile {profile!r} (profiles: {', '.join(PROFILES)})")
    chosen = {stage: "reference" for stage in STAGES}
    if profile in ("fast", "stitched"):
        fast = {}
        for stage in STAGES:
            mod = stage_module(stage)
            name = getattr(mod, "FAST", None) if mod is not None else None
            if name:
                fast[stage] = name
        if not fast:
            raise ConfigError("--impl fast: no fast implementation yet "
                              "(only the reference implementations exist)")
        chosen.update(fast)
        if profile == "stitched":
            chosen["layer"] = "stitched"
    chosen.update(overrides)
    for stage, name in chosen.items():
        get(stage, name)  # validate now, not halfway through a build
    return chosen


def with_layer_format(chosen: dict[str, str], layer_format: str | None) -> dict[str, str]:
    """Apply `--layer-format`: `stitched` selects the stitched layer and the fast expand and
    install it is built from; `sorted` keeps a sorted layer (fast if the profile was
    stitched); None leaves the profile's choice."""
    out = dict(chosen)
    if layer_format == "stitched":
        out.update(layer="stitched", expand="fast", install="fast")
    elif layer_format == "sorted" and out["layer"] == "stitched":
        out["layer"] = "fast"
    return out


def get(stage: str, name: str) -> Callable[..., Any]:
    """The callable implementing `stage` as `name`."""
    mod = stage_module(stage)
    if mod is None:
        if name != "reference":
            raise ConfigError(f"--impl: stage {stage!r} has only the reference implementation")
        raise ConfigError(f"--impl: stage {stage!r} has no selectable implementation module")
    impls: dict[str, Callable[..., Any]] = getattr(mod, "IMPLEMENTATIONS", {})
    if name in impls:
        return impls[name]
    param = getattr(mod, "parametric", None)
    fn = param(name) if param is not None else None
    if fn is None:
        extra = getattr(mod, "PARAMETRIC_HELP", [])
        raise ConfigError(f"--impl: stage {stage!r} has no implementation {name!r} "
                          f"(available: {', '.join(sorted(impls) + list(extra))})")
    return fn
