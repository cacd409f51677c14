"""The build plan: made by config + index + resolve, frozen and JSON-serialisable, and the
order `apkimage resolve` prints is the order the build installs in."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest

from builder.cli import main
from builder.pipeline import build
from builder.plan import BuildOptions, BuildPlan, make_plan
from builder.repo.fetch import Fetcher
from builder.spans import SpanRecorder
from tests.helpers import GOLDEN

EXTRA = ["custom-ca-certs-2", "custom-ca-certs-1"]


@pytest.fixture()
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "testdata").symlink_to(GOLDEN)
    return tmp_path


def _opts(workdir: Path, **kw: object) -> BuildOptions:
    return BuildOptions(config=str(GOLDEN / "apko.yaml"), workdir=str(workdir),
                        cache_dir=str(workdir / "cache"), package_append=list(EXTRA), **kw)


def test_plan_is_frozen_json_and_complete(workdir: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    rec = SpanRecorder()
    with Fetcher(str(workdir / "cache")) as fetcher:
        plan, planned = make_plan(_opts(workdir, build_date="2024-01-02T03:04:05Z"), rec,
                                  fetcher)
    doc = json.loads(json.dumps(plan.to_json()))
    assert BuildPlan.from_json(doc) == plan
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.build_date = 0  # type: ignore[misc]
    assert plan.source_date_epoch == 1700000000 and plan.build_date == 1704164645
    assert plan.options_epoch == 1700000000
    assert plan.config_sha256 == hashlib.sha256((GOLDEN / "apko.yaml").read_bytes()).hexdigest()
    assert [(k.name, k.sha256) for k in plan.keys] == [
        ("melange.rsa.pub", hashlib.sha256((GOLDEN / "melange.rsa.pub").read_bytes()).hexdigest())]
    assert [a.apk_arch for a in plan.archs] == ["x86_64", "aarch64"]
    for arch in plan.archs:
        names = [p.name for p in arch.packages]
        assert set(names) == {"pretend-baselayout", "replayout", *EXTRA}
        for p in arch.packages:
            assert p.checksum.startswith("Q1") and p.size > 0 and p.repository
        # The live records behind the plan are the same packages, in the same order.
        assert [p.name for p in planned.packages[arch.apk_arch]] == names
    assert [s.name for s in rec.spans][:2] == ["startup", "config"]
    assert {s.name for s in rec.spans} == {"startup", "config", "index", "resolve"}


def test_resolve_prints_the_order_the_build_installs(workdir: Path,
                                                     capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    rc = main(["resolve", str(GOLDEN / "apko.yaml"), "--workdir", str(workdir),
               "--cache-dir", str(workdir / "cache"), "--json",
               *[a for p in EXTRA for a in ("-p", p)]])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    result = build(_opts(workdir, sbom=False), workdir / "work", SpanRecorder())
    installed = {a.apk_arch: [f"{p.name}={p.version}" for p in a.packages]
                 for a in result.archs}
    assert printed == installed
    assert len(printed["x86_64"]) == 4
