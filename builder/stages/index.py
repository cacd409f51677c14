"""The `index` stage: get, verify and parse each repository's APKINDEX for one arch
(builder/repo/indexes.py)."""

from __future__ import annotations

from builder.repo.indexes import load_indexes
from builder.stages.base import Impl, StageSpec

STAGE = StageSpec("index", (
    Impl("index", "reference", load_indexes,
         "each repository's signed APKINDEX (conditional GET, cached by URL)"),
))
