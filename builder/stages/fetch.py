"""The `fetch` stage: every resolved `.apk` as a verified local file
(builder/repo/fetch_packages.py; the checks are builder/repo/verify.py's)."""

from __future__ import annotations

from builder.stages.spec import Impl, StageSpec

_WORK = "builder.repo.fetch_packages"

STAGE = StageSpec("fetch", (
    Impl("fetch", "reference", f"{_WORK}:fetch_reference",
         "one package after the other, each .apk read whole to verify it"),
    Impl("fetch", "parallel", f"{_WORK}:fetch_parallel", "the reference's work on a thread pool"),
    Impl("fetch", "fast", f"{_WORK}:fetch_fast",
         "thread pool, head-only verification, data sections hashed in place once per "
         "change of the file (verification stamps)"),
))
