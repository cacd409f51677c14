"""The `publish` stage: push the built images to a registry (builder/oci/publish.py)."""

from __future__ import annotations

from builder.oci.publish import publish_parallel, publish_reference
from builder.stages.base import Impl, StageSpec

STAGE = StageSpec("publish", (
    Impl("publish", "reference", publish_reference, "one blob upload at a time"),
    Impl("publish", "parallel", publish_parallel,
         "concurrent uploads, largest first; repositories side by side"),
))
