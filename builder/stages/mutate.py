"""The `mutate` stage: what apko does to the image after installing packages
(builder/mutate.py): accounts, `/etc/apko.json`, paths, services, busybox links, devices,
runtime repositories."""

from __future__ import annotations

from builder.mutate import mutate_reference
from builder.stages.base import Impl, StageSpec

STAGE = StageSpec("mutate", (
    Impl("mutate", "reference", mutate_reference, "apko's mutations, in apko's order"),
))
