"""The `publish` stage: push the built images to a registry (builder/oci/publish.py)."""

from __future__ import annotations

from builder.stages.spec import Impl, StageSpec

STAGE = StageSpec("publish", (
    Impl("publish", "reference", "builder.oci.publish:publish_reference",
         "one blob upload at a time"),
    Impl("publish", "parallel", "builder.oci.publish:publish_parallel",
         "concurrent uploads, largest first; repositories side by side"),
))
