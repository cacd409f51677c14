"""`apkimage build-many --executor dask` (builder/fanout.py): a local cluster of two worker
processes, each on a cache of its own, sharing layers through Debian's docker-registry as the
content store (builder/oci/content_store.py): the images are the serial build's, byte for
byte, and every layer is built once and its blob uploaded once (counted from the registry's
access log); a fresh pair of caches then pulls every layer instead of building it. A worker
killed mid-build costs a retry, not the image."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from perf.workloads import Workload
from tests.helpers import build_many_json, registry_log, require_tool, run_registry, small_world

pytestmark = [pytest.mark.tools, pytest.mark.slow]

STORE_REPO = "apkimage-cache"


@pytest.fixture(scope="module")
def world(small_workload: Workload, tmp_path_factory: pytest.TempPathFactory
          ) -> tuple[list[Path], dict[str, str]]:
    """The world's configs and each image's index digest from the serial local build."""
    tmp = tmp_path_factory.mktemp("world")
    configs = small_world(tmp, small_workload.config_path)
    doc = build_many_json(configs, tmp / "serial", "--layer-cache", "--cache-dir", str(tmp / "c"))
    return configs, {Path(i["config"]).stem: i["index_digest"] for i in doc["images"]}




def _layer_digests(layout: Path) -> set[str]:
    """Every layer blob of the OCI layout's images."""
    blobs = layout / "blobs" / "sha256"
    top = json.loads((layout / "index.json").read_text())
    out: set[str] = set()
    todo = [m["digest"] for m in top["manifests"]]
    while todo:
        doc = json.loads((blobs / todo.pop().split(":")[1]).read_text())
        todo += [m["digest"] for m in doc.get("manifests", [])]
        out |= {layer["digest"] for layer in doc.get("layers", [])}
    return out


def _spans(doc: dict, what: str) -> list[str]:
    """The layer cache outcome ("hit"/"miss") of every layer span of every image."""
    return [s["attrs"][what] for img in doc["images"] for s in img["spans"]["spans"]
            if s["name"] == "layer" and s["attrs"].get("output") == "cache"]




def test_two_workers_share_layers_through_a_registry(world: tuple[list[Path], dict[str, str]],
                                                     tmp_path: Path) -> None:
    require_tool("docker-registry")
    configs, serial = world
    with run_registry(tmp_path) as base:
        store = base.removeprefix("http://") + "/" + STORE_REPO
        t0 = time.monotonic()
        doc = build_many_json(configs, tmp_path / "many", "--executor", "dask", "--workers", "2",
                          "--content-store", store, "--cache-dir", str(tmp_path / "c1"))
        first_s = time.monotonic() - t0
        log = registry_log(base, tmp_path)
        again = build_many_json(configs, tmp_path / "again", "--executor", "dask", "--workers", "2",
                            "--content-store", store, "--cache-dir", str(tmp_path / "c2"))
        log_again = registry_log(base, tmp_path)[len(log):]

    got = {Path(i["config"]).stem: i["index_digest"] for i in doc["images"]}
    assert got == serial  # the serial local build's images, byte for byte
    assert {Path(i["config"]).stem: i["index_digest"] for i in again["images"]} == serial
    # Both workers built, each on its own cache.
    assert len({i["worker"] for i in doc["images"]}) == 2, [i["worker"] for i in doc["images"]]
    assert sorted(p.name for p in (tmp_path / "c1").iterdir()) == ["worker-0", "worker-1"]

    layers = set().union(*(_layer_digests(tmp_path / "many" / c.stem) for c in configs))
    keys = set(_spans(doc, "layer_key"))
    uploads = Counter(re.findall(
        rf'"PUT /v2/{STORE_REPO}/blobs/uploads/[^ "]*digest=sha256%3A([0-9a-f]{{64}})[^ "]* '
        r'HTTP/1.1" 201', log))
    records = Counter(re.findall(
        rf'"PUT /v2/{STORE_REPO}/manifests/layer-([0-9a-f]{{64}}) HTTP/1.1" 201', log))
    heads = len(re.findall(rf'"HEAD /v2/{STORE_REPO}/blobs/', log))
    print(f"first world: {first_s:.1f} s; {len(configs)} images, {len(layers)} layers, "
          f"{sum(uploads.values())} blob uploads, {heads} HEADs, {sum(records.values())} records")
    # Every layer blob uploaded exactly once (plus one record config blob per layer) ...
    assert {d: uploads[d.split(":")[1]] for d in layers} == {d: 1 for d in layers}
    assert max(uploads.values()) == 1
    # ... each layer built once in the cluster (a miss of both tiers) and recorded once.
    assert _spans(doc, "layer_cache").count("miss") == len(keys) == len(records)
    assert set(records) == keys and max(records.values()) == 1
    # Fresh caches: every layer pulled from the registry, nothing built or uploaded.
    assert set(_spans(again, "layer_cache")) == {"hit"}
    assert "PUT " not in log_again and "POST " not in log_again


def test_a_worker_killed_mid_build_costs_a_retry(world: tuple[list[Path], dict[str, str]],
                                                 tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    from builder.fanout import run_dask
    from builder.many import plan_jobs
    from builder.plan import BuildOptions
    from builder.stages.profiles import parse_impl

    configs, serial = world
    opts = BuildOptions(config="", cache_dir=str(tmp_path / "c"), layer_cache=True,
                        impl=parse_impl("fast"))
    jobs = plan_jobs(map(str, configs), tmp_path / "out", opts)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      scheduler_port=0, dashboard_address=None,
                      worker_dashboard_address=None,
                      scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}
                      ) as cluster, Client(cluster) as client:
        outcome: dict[str, object] = {}

        def run() -> None:
            try:
                outcome["results"] = run_dask(jobs, scheduler=cluster.scheduler_address,
                                              worker_caches=True)
            except BaseException as exc:  # noqa: B036 - reported by the test thread
                outcome["error"] = exc

        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.monotonic() + 30
        while True:
            busy = {w: keys for w, keys in client.processing().items() if keys}
            if busy or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert busy, "no build started within 30 s"
        victim, victim_keys = next(iter(busy.items()))
        time.sleep(0.2)  # into the build (a cold one: fetch, expand, layers)
        pid = client.run(os.getpid, workers=[victim])[victim]
        os.kill(pid, signal.SIGKILL)
        thread.join(120)
        assert not thread.is_alive()
    assert "error" not in outcome, outcome.get("error")
    results = outcome["results"]
    assert isinstance(results, list)
    assert {Path(r.config).stem: r.index_digest for r in results} == serial
    assert all(not r.worker.endswith(f":{pid}") for r in results)  # redone elsewhere
    print(f"killed worker pid {pid} while it built {victim_keys}")
