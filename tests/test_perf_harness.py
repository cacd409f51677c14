"""The harness against the real builder on the small synthetic workload: records, scenario
checks (including refusing broken setups), A/A compare, a real slowdown caught by the gate,
flamegraphs. Kept to a couple of minutes: --repeat 2-3, hot scenario where possible."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
from pathlib import Path

import pytest

from perf import flame, records, runner, stats
from perf.cli import main as apkperf
from perf.gitrefs import working_tree
from perf.runner import Job, Plan, Side
from perf.scenarios import (
    ColdScenario,
    HotScenario,
    OfflineScenario,
    ScenarioError,
    network_seal,
    preferred_repo_port,
    repo_port,
)

# Every test here runs real builds in child processes (and most need the small workload).
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SLOW = "reference,compress=zlib:9"


def _job(workload, scenarios, tmp_path, impls=("reference",), repeat=2, results=None) -> Job:
    tree = working_tree(REPO)
    plan = Plan(workload=workload.name, scenarios=list(scenarios),
                sides=[Side(i, tree, i) for i in impls], repeat=repeat, warmup=0,
                results_root=results, work_root=tmp_path / "run")
    return Job(plan, workload, log=lambda _m: None)


def test_cold_hot_offline_records(small_workload, tmp_path):
    results = tmp_path / "results"
    recs = _job(small_workload, ["cold", "hot", "offline"], tmp_path, results=results).run()
    assert [r["scenario"] for r in recs] == ["cold"] * 2 + ["hot"] * 2 + ["offline"] * 2
    stored = records.load_records(results)
    assert len(stored) == 6
    for rec in stored:
        records.validate_record(rec)
        assert rec["wall_s"] > 0 and rec["cpu_s"] > 0 and rec["peak_rss_mb"] > 10
        assert {"fetch", "layer", "compress"} <= set(rec["stages"])
        assert rec["image"]["digest"].startswith("sha256:")
        assert rec["image"]["diff_ids"]
        assert rec["machine"]["cores"] >= 1 and rec["machine"]["zlib"]
        assert rec["compressor"]
        assert Path(rec["_path"]).parent.parent.name == rec["machine_id"]
    # every scenario builds the same image: one repository URL (it is in the image) per job
    assert len({r["image"]["digest"] for r in stored}) == 1
    assert len({runner.image_identity(r) for r in stored}) == 1
    # cold fetched packages, hot did not
    cold = [r for r in stored if r["scenario"] == "cold"]
    hot = [r for r in stored if r["scenario"] == "hot"]
    assert all(r["stages"]["fetch"]["attrs"].get("bytes_fetched", 1) > 0 for r in cold)
    assert all(r["stages"]["fetch"]["attrs"].get("bytes_fetched", 0) == 0 for r in hot)
    assert stats.median([r["stages"]["fetch"]["wall_s"] for r in hot]) <= \
        stats.median([r["stages"]["fetch"]["wall_s"] for r in cold]) * 1.5


def test_repository_port_is_fixed_per_workload_unless_taken():
    port = preferred_repo_port("small-porttest")
    assert port == preferred_repo_port("small-porttest") and 20000 <= port < 30000
    assert port != preferred_repo_port("go-porttest")
    with repo_port("small-porttest") as (got, preferred):
        assert (got, preferred) == (port, True)
        with repo_port("small-porttest") as (other, preferred2):  # another job meanwhile
            assert not preferred2 and other != port
    with socket.socket() as busy:  # another program listens there
        busy.bind(("127.0.0.1", port))
        busy.listen()
        with repo_port("small-porttest") as (other, preferred3):
            assert not preferred3 and other != port
    with repo_port("small-porttest") as (got, preferred):
        assert (got, preferred) == (port, True)


def test_scenarios_building_different_images_are_refused(small_workload, tmp_path, monkeypatch):
    # Break the setup: the hot scenario serves the repository on another port, so its image
    # names another URL in /etc/apk/repositories.
    original = runner.make_scenario

    def other_port_for_hot(name, *args, **kw):
        if name == "hot":
            kw["repo_port"] = 0
        return original(name, *args, **kw)

    monkeypatch.setattr(runner, "make_scenario", other_port_for_hot)
    with pytest.raises(ScenarioError, match="reference: the hot build .* made another image "
                                            "than the cold round 0 build"):
        _job(small_workload, ["cold", "hot"], tmp_path, repeat=1).run()


def test_cold_with_populated_cache_is_refused(small_workload, tmp_path, monkeypatch):
    def keep_cache(self, st):
        st.cache_dir.mkdir(parents=True, exist_ok=True)
        (st.cache_dir / "leftover").write_text("x")

    monkeypatch.setattr(ColdScenario, "reset_cache", keep_cache)
    with pytest.raises(ScenarioError, match="cold scenario: cache dir .* is not empty"):
        _job(small_workload, ["cold"], tmp_path, repeat=1).run()


def test_hot_with_emptied_cache_is_refused(small_workload, tmp_path, monkeypatch):
    original = HotScenario.after_warm

    def warm_then_wipe(self, st, reqs):
        original(self, st, reqs)
        shutil.rmtree(st.cache_dir)
        st.cache_dir.mkdir()

    monkeypatch.setattr(HotScenario, "after_warm", warm_then_wipe)
    with pytest.raises(ScenarioError, match="hot: cache .* has no entry for"):
        _job(small_workload, ["hot"], tmp_path, repeat=1).run()


def test_offline_that_reaches_the_network_is_refused(small_workload, tmp_path, monkeypatch):
    # Break the setup: the repository stays up and --offline is not passed.
    monkeypatch.setattr(OfflineScenario, "go_offline", lambda self: None)
    original = OfflineScenario.build_args

    def online_args(self, st, out, spans, impl, extra=None):
        return original(self, st, out, spans, impl, [e for e in (extra or []) if
                                                     e != "--offline"])

    monkeypatch.setattr(OfflineScenario, "build_args", online_args)
    tried = r"tried the network .*socket[.][a-z]+ \('127.0.0.1', [0-9]+\)"
    with pytest.raises(ScenarioError, match=rf"offline run of reference ({tried}|sent .* request)"):
        _job(small_workload, ["offline"], tmp_path, repeat=1).run()


def test_offline_build_that_swallows_a_connection_attempt_fails(small_workload, tmp_path):
    # The measured build first tries 192.0.2.1:443 (TEST-NET-1), ignores the failure, then
    # builds normally and succeeds: only the seal's audit log can tell.
    errno_file = tmp_path / "errno"
    code = ("import socket, sys, runpy\n"
            "s = socket.socket(); s.settimeout(2)\n"
            f"open({str(errno_file)!r}, 'w').write(str(s.connect_ex(('192.0.2.1', 443))))\n"
            "sys.argv = ['apkimage', *sys.argv[1:]]\n"
            "runpy.run_module('builder.cli', run_name='__main__')\n")

    def connect_first(argv, side, tag):
        i = argv.index("-m")
        return [*argv[:i], "-c", code, *argv[i + 2:]]

    job = _job(small_workload, ["offline"], tmp_path, repeat=1)
    job.plan.wrap = connect_first
    with pytest.raises(ScenarioError, match=r"offline run of reference tried the network 1 "
                                            r"time\(s\): socket.connect \('192.0.2.1', 443\)"):
        job.run()
    if network_seal():  # sealed: the attempt could not leave the namespace
        assert int(errno_file.read_text()) == errno.ENETUNREACH
    else:
        assert os.environ.get("APKIMAGE_REQUIRE_TOOLS") != "1", "unshare -n cannot run here"


def _gate(tmp_path, *extra) -> tuple[int, dict]:
    out = tmp_path / f"gate-{len(list(tmp_path.glob('gate-*')))}.json"
    rc = apkperf(["gate", "WORKTREE", "--workload", "small", "--scenario", "hot",
                  "--repeat", "3", "--warmup", "1", "--no-save", "--json", str(out), *extra])
    return rc, json.loads(out.read_text())


def test_gate_aa_passes(tmp_path):
    # The CI thresholds: this suite runs on two workers, so the other one's builds make the
    # machine as noisy as a shared CI runner.
    rc, doc = _gate(tmp_path, "--ci")
    rows = {r["stage"]: r for r in doc["rows"]}
    assert rc == 0, doc["failures"]
    assert "total" in rows and "compress" in rows
    # Three pairs on a loaded machine may well call an A/A change "slower" at 95 %; that is
    # why the gate asks for the whole interval past the threshold. The median ratio of three
    # pairs beside the suite's other worker has been seen at 1.26 (clean-clone CI run): the
    # bound only catches a measurement that is broken (two different things timed).
    assert 0.67 < rows["total"]["ratio"] < 1.5, rows["total"]


def test_gate_catches_compress_slowdown(tmp_path):
    rc, doc = _gate(tmp_path, "--base-impl", "reference", "--head-impl", SLOW,
                    "--stage-threshold", "compress=15")
    rows = {r["stage"]: r for r in doc["rows"]}
    assert rows["compress"]["verdict"] == stats.SLOWER
    assert rows["compress"]["ratio"] > 1.15
    assert rc == 1
    assert any("hot/compress" in f for f in doc["failures"])
    # a threshold above the slowdown lets it through (total and compress)
    rc2 = apkperf(["gate", "WORKTREE", "--workload", "small", "--scenario", "hot",
                   "--repeat", "2", "--warmup", "0", "--no-save", "--base-impl", "reference",
                   "--head-impl", SLOW, "--threshold", "1000", "--stage-default", "1000"])
    assert rc2 == 0


def test_flame_outputs(tmp_path):
    rc = apkperf(["flame", "--workload", "small", "--scenario", "hot", "--out",
                  str(tmp_path), "--rate", "400"])
    assert rc == 0
    folded_files = list(tmp_path.glob("*.folded"))
    assert len(folded_files) == 1
    folded = flame.read_folded(folded_files[0])
    assert flame.total(folded) > 20
    assert flame.frames_matching(folded, "compress") > 0
    svg = next(p for p in tmp_path.glob("*.svg") if "diff" not in p.name)
    assert svg.stat().st_size > 5000 and "compress" in svg.read_text()
    speedscope = json.loads(next(tmp_path.glob("*.speedscope.json")).read_text())
    assert speedscope["profiles"][0]["type"] == "sampled"
    html = next(tmp_path.glob("*.pyinstrument.html"))
    assert html.stat().st_size > 10_000


def test_stitched_reuse_is_reported(small_workload, tmp_path):
    """The run table says how many compressed bytes a stitched build reused verbatim and how
    many it compressed again (from the compress span's attributes)."""
    from perf.runner import format_run_table

    recs = _job(small_workload, ["hot"], tmp_path, impls=("fast", "stitched"), repeat=1).run()
    by_impl = {r["impl"]: r for r in recs}
    attrs = by_impl["stitched"]["stages"]["compress"]["attrs"]
    assert attrs["reused_bytes"] > 0.9 * by_impl["stitched"]["stages"]["compress"]["bytes_out"]
    assert 0 < attrs["recompressed_out"] < attrs["recompressed_in"]
    table = format_run_table(recs)
    lines = [line for line in table.splitlines() if "verbatim" in line]
    assert len(lines) == 1 and lines[0].lstrip().startswith("stitched: reused ")
    assert f"{attrs['reused_bytes'] / 1e6:.1f} MB" in lines[0]


def test_lock_scenarios_build_from_a_lockfile_and_refuse_an_index_request(tmp_path,
                                                                         small_workload):
    from perf.scenarios import ScenarioError, SideState, make_scenario

    with make_scenario("hot-lock", small_workload, tmp_path / "hl") as scen:
        doc = json.loads(scen.lock_path.read_text())
        assert doc["version"] == "v1" and doc["contents"]["packages"]
        assert scen.server.url in doc["contents"]["packages"][0]["url"]
        st = SideState("a", tmp_path / "a", tmp_path / "a" / "cache")
        args = scen.build_args(st, tmp_path / "out", tmp_path / "s.json", "fast")
        assert args[-2:] == ["--lockfile", str(scen.lock_path)]
        token = len(scen.requests())
        import urllib.request

        urllib.request.urlopen(f"{scen.server.url}/x86_64/APKINDEX.tar.gz").read()
        with pytest.raises(ScenarioError, match="requested /x86_64/APKINDEX.tar.gz"):
            scen.check_no_index(st, token)
