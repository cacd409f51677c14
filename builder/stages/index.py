"""The `index` stage: get, verify and parse each repository's APKINDEX for one arch
(builder/repo/indexes.py)."""

from __future__ import annotations

from builder.stages.spec import Impl, StageSpec

STAGE = StageSpec("index", (
    Impl("index", "reference", "builder.repo.indexes:load_indexes",
         "each repository's signed APKINDEX (conditional GET, cached by URL)"),
))
