"""`apkperf peers`: apkimage and the tools a user would reach for instead, on the small
workload. The peers' layers must hold apkimage's paths, a missing tool is reported as skipped
(never measured as something else), and the report section renders from stored results."""

from __future__ import annotations

import gzip
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from perf import peers
from perf.gitrefs import working_tree
from perf.machine import machine_id, machine_info
from perf.peers import PeersJob, PeersPlan
from perf.report import write_report
from tests.helpers import REPO_ROOT, require_tool


def _paths_of(tar_bytes_or_path) -> set[str]:
    with tarfile.open(fileobj=tar_bytes_or_path, mode="r:") as tf:
        return {n for m in tf if (n := peers.norm_path(m.name))}


def _plan(tmp_path: Path, **kw) -> PeersPlan:
    defaults = dict(workload="small", tree=working_tree(REPO_ROOT), impls=["stitched"],
                    repeat=1, warmup=0, work_root=tmp_path / "run", keep_outputs=True,
                    tool_dirs=[REPO_ROOT / ".venv" / "tools" / "bin"])
    defaults.update(kw)
    return PeersPlan(**defaults)


@pytest.mark.slow
@pytest.mark.tools
def test_peer_layers_hold_apkimage_paths(small_workload, tmp_path):
    require_tool("umoci")
    plan = _plan(tmp_path, repeat=2, results_root=tmp_path / "peers")
    doc = PeersJob(plan, small_workload, log=lambda _m: None).run_peers()
    entries = {e["key"]: e for e in doc["entries"]}

    # apkimage's layer, read here on its own: the paths every peer must pack
    with open(doc["image"]["layer_path"], "rb") as f:
        want = _paths_of(gzip.GzipFile(fileobj=f))
    assert len(want) > 1000 and "usr/bin" in want
    assert doc["image"]["tree_matches_layer"]
    assert doc["image"]["tree"]["entries"] == len(want)

    for key in ("apkimage-stitched-cold", "apkimage-stitched-hot", "tar-gzip", "umoci"):
        e = entries[key]
        assert e["status"] == "ok", e["reason"]
        assert [s["round"] for s in e["samples"]] == [0, 1]
        assert all(s["wall_s"] > 0 and s["cpu_s"] > 0 for s in e["samples"])
        assert e["summary"]["n"] == 2
    if shutil.which("pigz"):
        assert entries["tar-pigz"]["status"] == "ok", entries["tar-pigz"]["reason"]
    else:  # `make tools` does not install pigz (`make peer-tools` does)
        assert entries["tar-pigz"]["status"] == "skipped"
        assert "pigz" in entries["tar-pigz"]["reason"]

    for key in ("tar-gzip", "tar-pigz"):
        if entries[key]["status"] != "ok":
            continue
        out = Path(entries[key]["output"]["path"])
        with gzip.open(out) as f:  # one gzip stream holding one tar
            assert _paths_of(f) == want, key
        assert entries[key]["output"]["same_paths"]
    umoci_layer = Path(entries["umoci"]["output"]["path"])
    with gzip.open(umoci_layer) as f:
        assert _paths_of(f) == want
    # without apk on PATH both apk peers say so, and nothing is measured for them
    for key in ("apk-cold", "apk-hot"):
        if shutil.which("apk") is None:
            assert entries[key]["status"] == "skipped" and "apk" in entries[key]["reason"]
            assert entries[key]["samples"] == []

    # ratios pair the peers' rounds with apkimage's
    pairs = {(r["peer"], r["apkimage"]) for r in doc["ratios"]}
    assert ("tar-gzip", "apkimage-stitched-hot") in pairs
    assert all(r["pairs"] == 2 and r["wall_ratio"] > 0 for r in doc["ratios"])
    table = peers.format_table(doc)
    assert "stitched hot is" in table and "tar | gzip -6" in table

    stored = peers.save_result(plan.results_root, doc)
    assert stored.parent.name == doc["machine_id"]
    loaded = peers.load_results(plan.results_root)
    assert [d["job"] for d in loaded] == [doc["job"]]
    assert loaded[0]["machine"]["cores"] >= 1 and loaded[0]["commit"] == doc["commit"]


def test_missing_tools_are_reported_skipped(small_workload, tmp_path, monkeypatch):
    missing = {"pigz", "umoci", "apk"}
    real = peers.find_tool
    monkeypatch.setattr(peers, "find_tool",
                        lambda name, dirs=(): None if name in missing else real(name, dirs))
    job = PeersJob(_plan(tmp_path), small_workload, log=lambda _m: None)
    job._prepare_peers()  # tools are looked for before anything is set up or measured
    doc = job.result()
    by_key = {e["key"]: e for e in doc["entries"]}
    assert by_key["tar-gzip"]["status"] == "ok"  # tar and gzip are there
    for key, tool in (("tar-pigz", "pigz"), ("umoci", "umoci"), ("apk-cold", "apk"),
                      ("apk-hot", "apk")):
        e = by_key[key]
        assert e["status"] == "skipped", key
        assert tool in e["reason"] and "not installed" in e["reason"]
        assert e["samples"] == [] and e["summary"] is None
    text = peers.format_table(doc)
    assert "apk add (cold) + tar | pigz -6" in text and "SKIPPED: not installed: apk" in text
    json.dumps(doc)  # storable as it is


def test_unknown_peer_or_scenario_is_refused(small_workload, tmp_path):
    with pytest.raises(peers.ScenarioError, match="unknown peer"):
        PeersJob(_plan(tmp_path, peers=["docker"]), small_workload)
    with pytest.raises(peers.ScenarioError, match="offline"):
        PeersJob(_plan(tmp_path, scenarios=["offline"]), small_workload)


def _synthetic_doc(workload: str = "small") -> dict:
    def samples(wall: float, cpu: float) -> list[dict]:
        return [{"round": r, "wall_s": wall + 0.01 * r, "cpu_s": cpu, "user_s": cpu,
                 "sys_s": 0.0, "peak_rss_mb": 50.0} for r in range(3)]

    entries = [
        peers.Entry("apkimage-stitched-hot", "apkimage stitched hot", "apkimage",
                    impl="stitched", scenario="hot", samples=samples(0.3, 0.3),
                    output={"bytes": 6_000_000}),
        peers.Entry("tar-gzip", "tar | gzip -6", "peer", samples=samples(0.9, 0.9),
                    output={"bytes": 5_400_000, "same_paths": True, "paths": 1457,
                            "missing": 0, "extra": 0}),
        peers.Entry("apk-cold", "apk add (cold) + tar | pigz -6", "peer", status="skipped",
                    reason="not installed: apk not found on PATH"),
    ]
    js = [e.to_json() for e in entries]
    return {"schema": peers.SCHEMA_VERSION, "kind": "peers", "job": "20260101T000000-abcdef",
            "workload": workload, "started_at": "2026-01-01T00:00:00+00:00",
            "commit": "c" * 40, "dirty": False, "tree": "WORKTREE",
            "machine": machine_info(), "machine_id": machine_id(),
            "options": {"repeat": 3, "warmup": 1, "impls": ["stitched"], "scenarios": ["hot"],
                        "peers": ["tar-gzip", "apk-cold"]},
            "image": {"impl": "stitched", "scenario": "hot", "layer_digest": "sha256:" + "a" * 64,
                      "layer_bytes": 6_000_000, "layer_members": 1802, "layer_paths": 1457,
                      "tree": {"entries": 1457, "files": 1214, "dirs": 186, "symlinks": 52,
                               "other": 5, "file_bytes": 15_000_000},
                      "tree_matches_layer": True},
            "entries": js, "ratios": peers.ratios(js)}


def test_ratio_is_paired_and_phrased_for_apkimage():
    doc = _synthetic_doc()
    (r,) = doc["ratios"]
    assert r["peer"] == "tar-gzip" and r["apkimage"] == "apkimage-stitched-hot"
    assert r["pairs"] == 3 and 2.9 < r["wall_ratio"] < 3.05
    text = peers.ratio_sentence("stitched hot", "tar | gzip -6", r)
    assert text.startswith("stitched hot is 2.9") and "faster than tar | gzip -6" in text
    slow = peers.ratio_sentence("a", "b", {"wall_ratio": 0.5, "wall_ci": [0.4, 0.6],
                                           "cpu_ratio": 0.5})
    assert slow.startswith("a is 2.00x slower than b") and "x0.40..x0.60;" in slow
    assert "CPU 2.00x more" in slow
    noisy = peers.ratio_sentence("a", "b", {"wall_ratio": 1.1, "wall_ci": [0.9, 1.3],
                                            "cpu_ratio": 1.0})
    assert "1.10x faster" in noisy and "not significant" in noisy


def test_report_section_renders_from_stored_results(tmp_path, monkeypatch):
    root = tmp_path / "peers"
    older = _synthetic_doc()
    older["started_at"], older["job"] = "2025-01-01T00:00:00+00:00", "20250101T000000-000000"
    older["entries"][0]["name"] = "apkimage OLD"
    peers.save_result(root, older)
    peers.save_result(root, _synthetic_doc())
    (root / machine_id() / "broken.json").write_text("{not json")

    out = tmp_path / "report"
    html = peers.peers_html(out, root)
    assert "<h2>apkimage and its peers</h2>" in html
    assert "20260101T000000-abcdef" in html and "OLD" not in html  # the latest one only
    assert "stitched hot is 2.9" in html and "faster than tar | gzip -6" in html
    assert "skipped: not installed: apk" in html
    assert (out / "peers" / "peers-small.png").stat().st_size > 1000
    assert (out / "peers" / "peers-small.svg").is_file()

    assert "No peers results yet" in peers.peers_html(out, tmp_path / "none")

    monkeypatch.setenv("APKPERF_PEERS_DIR", str(root))
    index = write_report([], out)
    text = index.read_text()
    assert "apkimage and its peers" in text and "peers/peers-small.png" in text
    assert "peers-small" not in text.split("<h2>Profiles</h2>")[1]  # not listed as a profile
