"""The `config` stage: load + validate the apko YAML (builder/config.py) and apply the
command-line overrides."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from builder.stages.spec import Impl, StageSpec

if TYPE_CHECKING:
    from builder.config import ImageConfig


def config_reference(path: str | Path, workdir: str | Path | None,
                     overrides: dict[str, Any]) -> ImageConfig:
    from builder.config import apply_overrides, load_config

    return apply_overrides(load_config(path, workdir), **overrides)


STAGE = StageSpec("config", (
    Impl("config", "reference", config_reference,
         "load and validate the YAML (errors name file:line:key), apply flags"),
))
