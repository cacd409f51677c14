"""The `config` stage: load + validate the YAML and apply the command-line overrides.

Interface: `config(path, workdir, overrides) -> ImageConfig`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from builder.config import ImageConfig, apply_overrides, load_config


def config_reference(path: str | Path, workdir: str | Path | None,
                     overrides: dict[str, Any]) -> ImageConfig:
    return apply_overrides(load_config(path, workdir), **overrides)


IMPLEMENTATIONS: dict[str, Callable[..., ImageConfig]] = {"reference": config_reference}
