"""What the conformance suite builds its checks from: the registered implementations (the
registry in force: builder.stages.registry.current()), a compatible profile for each, and
builds of apko's golden fixture."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from builder.spans import STAGES, SpanRecorder
from builder.stages.profiles import check
from builder.stages.registry import current
from builder.stages.spec import Impl
from tests.helpers import GOLDEN, GOLDEN_ANNOTATIONS


def implementations(stage: str) -> list[Impl]:
    """Every registered implementation of `stage`, plus its sampled parametric forms."""
    spec = current().stage(stage)
    return list(spec.impls) + [spec.get(name) for name in spec.parametric_samples]


def all_implementations() -> list[Impl]:
    return [impl for stage in STAGES for impl in implementations(stage)]


def impl_id(impl: Impl) -> str:
    return f"{impl.stage}={impl.name}"


def profile_for(impl: Impl) -> dict[str, str]:
    """Reference everywhere, `impl` for its stage, and for each stage it requires something
    from, the first implementation that provides it. Checked."""
    reg = current()
    chosen = {stage: "reference" for stage in STAGES}
    chosen[impl.stage] = impl.name
    for other, capability in impl.requires.items():
        if capability not in reg.get(other, chosen[other]).provides:
            chosen[other] = next(i.name for i in reg.stage(other).impls
                                 if capability in i.provides)
    check(chosen, reg)
    return chosen


class GoldenBuilds:
    """Builds of apko's golden fixture (both archs), one per distinct profile, made once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.workdir = root / "wd"
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not (self.workdir / "testdata").exists():
            (self.workdir / "testdata").symlink_to(GOLDEN)
        self._done: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}

    def build(self, chosen: dict[str, str]) -> dict[str, Any]:
        """{"summary": the image summary, "spans": [span dicts], "out": the work dir}."""
        from builder.pipeline import build
        from builder.plan import BuildOptions

        key = tuple(sorted(chosen.items()))
        if key not in self._done:
            out = Path(tempfile.mkdtemp(prefix="build-", dir=self.root))
            opts = BuildOptions(config=str(GOLDEN / "apko.yaml"), tag="golden:latest",
                                cache_dir=str(out / "cache"), workdir=str(self.workdir),
                                annotations=[f"{k}:{v}" for k, v in GOLDEN_ANNOTATIONS.items()],
                                impl=dict(chosen))
            rec = SpanRecorder()
            result = build(opts, out / "work", rec)
            self._done[key] = {"summary": json.loads(json.dumps(result.summary())),
                               "spans": rec.to_json()["spans"], "result": result}
        return self._done[key]
