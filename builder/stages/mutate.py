"""The `mutate` stage: what apko does to the image after installing packages
(builder/mutate.py): accounts, `/etc/apko.json`, paths, services, busybox links, devices,
runtime repositories."""

from __future__ import annotations

from builder.stages.spec import Impl, StageSpec

STAGE = StageSpec("mutate", (
    Impl("mutate", "reference", "builder.mutate:mutate_reference",
         "apko's mutations, in apko's order"),
))
