"""The `config` stage: load + validate the apko YAML (builder/config.py) and apply the
command-line overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from builder.config import ImageConfig, apply_overrides, load_config
from builder.stages.base import Impl, StageSpec


def config_reference(path: str | Path, workdir: str | Path | None,
                     overrides: dict[str, Any]) -> ImageConfig:
    return apply_overrides(load_config(path, workdir), **overrides)


STAGE = StageSpec("config", (
    Impl("config", "reference", config_reference,
         "load and validate the YAML (errors name file:line:key), apply flags"),
))
