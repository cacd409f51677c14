"""Packages shared through the content store (`--content-store REGISTRY/REPO`,
builder/repo/fetch.py, builder/oci/content_store.py): caches that never saw a package pull it
from the registry instead of the APK repository, verified as a download is; a damaged or
mismatching package in the registry is refused with a warning and downloaded; on a Dask
cluster of two workers with caches of their own, each package is downloaded from the
repository once; offline, the store is read and the repository never asked. The repository
is a RepoServer (127.0.0.1) counting requests, the store Debian's docker-registry; the last
tests hold manifests that are no package of the `C:` asked for to a stand-in registry."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest
import requests
import yaml

from builder.cli import main
from builder.oci.content_store import RegistryContentStore
from perf.workloads import Workload
from tests.helpers import (
    RepoServer,
    build_many_json,
    layered_variant,
    registry_log,
    require_tool,
    run_registry,
    small_world,
)

STORE_REPO = "apkimage-cache"


@pytest.fixture
def server(small_workload: Workload) -> Iterator[RepoServer]:
    """The small workload's repository over HTTP, counting requests (one per test)."""
    with RepoServer(small_workload.repo_dir) as srv:
        yield srv


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    """A docker-registry on 127.0.0.1; yields its base URL."""
    require_tool("docker-registry")
    with run_registry(tmp_path) as base:
        yield base


def _remote_config(tmp: Path, workload: Workload, url: str) -> Path:
    """The small workload's config, reading its repository from `url`."""
    doc = yaml.safe_load(workload.config_path.read_text())
    doc["contents"]["repositories"] = [url]
    path = tmp / "small.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path




def _fetch(doc: dict, what: str) -> int:
    """The sum of fetch span attribute `what` over every image of a build-many run."""
    return sum(s["attrs"][what] for img in doc["images"] for s in img["spans"]["spans"]
               if s["name"] == "fetch")


def _digests(doc: dict) -> dict[str, str]:
    return {Path(i["config"]).stem: i["index_digest"] for i in doc["images"]}


def _apk_gets(srv: RepoServer) -> Counter[str]:
    """Package downloads from the repository, by file name."""
    return Counter(unquote(p.rsplit("/", 1)[1]) for p in srv.gets(".apk"))


def _ref(base: str) -> str:
    """The content store's REGISTRY/REPO on the registry at `base`."""
    return base.removeprefix("http://") + "/" + STORE_REPO


def _store(base: str) -> RegistryContentStore:
    return RegistryContentStore(_ref(base))


def _stored_packages(store: RegistryContentStore) -> dict[str, str]:
    """name-version of every package the store holds -> the hex SHA-1 of its `C:`."""
    out = {}
    for tag in store.registry.tags(store.repo):
        if tag.startswith("apk-"):
            doc = json.loads(store.registry.get_manifest(store.repo, tag)[0])
            out[doc["annotations"]["dev.apkimage.apk.package"]] = tag.removeprefix("apk-")
    return out




def _blob_uploads(log: str) -> Counter[str]:
    return Counter(re.findall(
        rf'"PUT /v2/{STORE_REPO}/blobs/uploads/[^ "]*digest=sha256%3A([0-9a-f]{{64}})[^ "]* '
        r'HTTP/1.1" 201', log))


@pytest.mark.tools
def test_a_second_cache_takes_every_package_from_the_store(
        small_workload: Workload, server: RepoServer, registry: str, tmp_path: Path) -> None:
    config = _remote_config(tmp_path, small_workload, server.url)
    store = _ref(registry)
    first = build_many_json([config], tmp_path / "one", "--content-store", store,
                        "--cache-dir", str(tmp_path / "c1"))
    downloads = _apk_gets(server)
    second = build_many_json([config], tmp_path / "two", "--content-store", store,
                         "--cache-dir", str(tmp_path / "c2"))
    again = _apk_gets(server) - downloads
    client = _store(registry)
    stored = _stored_packages(client)
    log = registry_log(registry, tmp_path)

    packages = len(downloads)
    print(f"first cache: {packages} packages downloaded, {_fetch(first, 'store_pushes')} pushed;"
          f" second cache: {sum(again.values())} downloaded, {_fetch(second, 'store_hits')} "
          f"from the store ({_fetch(second, 'store_bytes')} bytes)")
    assert packages > 10 and set(downloads.values()) == {1}
    assert _fetch(first, "store_pushes") == packages and _fetch(first, "store_hits") == 0
    assert {f"{name}.apk" for name in stored} == set(downloads)  # one artifact per package
    # The second cache: nothing from the repository, everything from the store.
    assert not again
    assert _fetch(second, "store_hits") == packages and _fetch(second, "store_pushes") == 0
    index = small_workload.repo_dir / "x86_64" / "APKINDEX.tar.gz"
    assert _fetch(second, "bytes_fetched") == index.stat().st_size  # the index alone
    assert _fetch(second, "store_refused") == 0
    assert _digests(second) == _digests(first)
    # Each package blob uploaded once (HEAD before PUT), none by the second build.
    sizes = {p.name: p.stat().st_size for p in (small_workload.repo_dir / "x86_64").iterdir()}
    assert _fetch(second, "store_bytes") == sum(sizes[name] for name in downloads)
    uploads = _blob_uploads(log)
    blobs = [client.find_package(chex) for chex in stored.values()]
    assert all(b is not None and uploads[b.digest.removeprefix("sha256:")] == 1 for b in blobs)
    assert max(uploads.values()) == 1


@pytest.mark.tools
def test_a_damaged_package_in_the_store_is_refused_and_downloaded(
        small_workload: Workload, server: RepoServer, registry: str, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    config = _remote_config(tmp_path, small_workload, server.url)
    ref = _ref(registry)
    first = build_many_json([config], tmp_path / "one", "--content-store", ref,
                        "--cache-dir", str(tmp_path / "c1"))
    store = _store(registry)
    stored = _stored_packages(store)
    retagged, flipped = sorted(stored)[:2]

    # 1. Another blob under the tag: the package with one byte of its data section changed
    # (same size, so only the datahash check can tell).
    apk = (tmp_path / "c1" / "v1" / "apk" / stored[retagged][:2] / stored[retagged]
           / "package.apk").read_bytes()
    bad = bytearray(apk)
    bad[-100] ^= 0xFF
    (tmp_path / "bad.apk").write_bytes(bad)
    good = store.find_package(stored[retagged])
    assert good is not None
    doc = json.loads(store.registry.get_manifest(store.repo, f"apk-{stored[retagged]}")[0])
    bad_digest = store.put(bytes(bad))
    store.put_package(stored[retagged], tmp_path / "bad.apk", bad_digest, len(bad),
                      doc["annotations"])
    # 2. The registry's own copy of a blob damaged on its disk: it sends bytes that do not
    # hash to their name.
    other = store.find_package(stored[flipped])
    assert other is not None
    hexd = other.digest.removeprefix("sha256:")
    data = next((tmp_path / f"registry-{registry.rsplit(':', 1)[1]}").glob(
        f"storage/docker/registry/v2/blobs/sha256/{hexd[:2]}/{hexd}/data"))
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    data.write_bytes(raw)

    before = _apk_gets(server)
    with caplog.at_level(logging.WARNING):
        second = build_many_json([config], tmp_path / "two", "--content-store", ref,
                             "--cache-dir", str(tmp_path / "c2"))
    downloaded = _apk_gets(server) - before

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    print("\n".join(warnings))
    assert downloaded == Counter({f"{retagged}.apk": 1, f"{flipped}.apk": 1})
    assert _digests(second) == _digests(first)  # nothing unverified went into the image
    assert _fetch(second, "store_refused") == 2
    assert _fetch(second, "store_hits") == len(stored) - 2
    assert _fetch(second, "store_pushes") == 2
    assert any(retagged in w and "datahash mismatch" in w and "refused" in w
               for w in warnings), warnings
    assert any(other.digest in w and "hashes to" in w and "refused" in w
               for w in warnings), warnings
    # The download repaired the tag that named another blob.
    repaired = store.find_package(stored[retagged])
    assert repaired is not None and repaired.digest == good.digest


@pytest.mark.tools
def test_a_package_of_another_size_is_refused_on_its_manifest(
        small_workload: Workload, server: RepoServer, registry: str, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """A manifest whose blob is not the index's S: bytes is refused before the blob is read."""
    config = _remote_config(tmp_path, small_workload, server.url)
    ref = _ref(registry)
    first = build_many_json([config], tmp_path / "one", "--content-store", ref,
                        "--cache-dir", str(tmp_path / "c1"))
    store = _store(registry)
    stored = _stored_packages(store)
    name = sorted(stored)[0]
    doc = json.loads(store.registry.get_manifest(store.repo, f"apk-{stored[name]}")[0])
    junk = b"not this package" * 10
    (tmp_path / "junk").write_bytes(junk)
    digest = store.put(junk)
    store.put_package(stored[name], tmp_path / "junk", digest, len(junk), doc["annotations"])
    log = registry_log(registry, tmp_path)
    before = _apk_gets(server)
    with caplog.at_level(logging.WARNING):
        second = build_many_json([config], tmp_path / "two", "--content-store", ref,
                             "--cache-dir", str(tmp_path / "c2"))
    assert _apk_gets(server) - before == Counter({f"{name}.apk": 1})
    assert _digests(second) == _digests(first)
    assert f"GET /v2/{STORE_REPO}/blobs/{digest}" not in registry_log(registry, tmp_path)[len(log):]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"its blob is {len(junk)} bytes, the index says S:" in w for w in warnings), \
        warnings


def _indexes_only(src: Path, dest: Path) -> Path:
    """A cache holding what `src` holds of its repositories' indexes, and no package."""
    import shutil

    for part in ("index", "blobs", "index-parsed"):
        if (src / "v1" / part).exists():
            shutil.copytree(src / "v1" / part, dest / "v1" / part)
    return dest


@pytest.mark.tools
def test_offline_takes_packages_from_the_store_and_never_the_repository(
        small_workload: Workload, server: RepoServer, registry: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """--offline reaches no repository; the content store named by the build is a tier of
    the cache and is read (nothing is pushed: nothing is downloaded). Without it, or for a
    package it lacks, offline is the usual error."""
    config = _remote_config(tmp_path, small_workload, server.url)
    ref = _ref(registry)
    first = build_many_json([config], tmp_path / "one", "--content-store", ref,
                        "--cache-dir", str(tmp_path / "c1"))
    packages = sum(_apk_gets(server).values())
    log = registry_log(registry, tmp_path)
    asked = len(server.requests)

    offline = build_many_json([config], tmp_path / "two", "--offline", "--content-store", ref,
                          "--cache-dir", str(_indexes_only(tmp_path / "c1", tmp_path / "c2")))
    assert len(server.requests) == asked  # not even the index's revalidation
    assert _digests(offline) == _digests(first)
    assert _fetch(offline, "store_hits") == packages
    assert _fetch(offline, "store_pushes") == 0
    assert "PUT " not in registry_log(registry, tmp_path)[len(log):]

    # Without the store: no registry, no repository, the error names the missing package.
    rc = main(["build-many", str(config), "--out-dir", str(tmp_path / "three"), "--offline",
               "--cache-dir", str(_indexes_only(tmp_path / "c1", tmp_path / "c3"))])
    err = capsys.readouterr().err
    assert rc == 1 and "offline: " in err and "is not in the cache" in err, err
    assert "content store" not in err
    # A store that lacks a package: both named.
    store = _store(registry)
    tag = f"apk-{sorted(_stored_packages(store).values())[0]}"
    raw, _ = store.registry.get_manifest(store.repo, tag)
    gone = requests.delete(f"{registry}/v2/{STORE_REPO}/manifests/sha256:"
                           f"{hashlib.sha256(raw).hexdigest()}", timeout=10)
    assert gone.status_code == 202
    rc = main(["build-many", str(config), "--out-dir", str(tmp_path / "four"), "--offline",
               "--content-store", ref,
               "--cache-dir", str(_indexes_only(tmp_path / "c1", tmp_path / "c4"))])
    err = capsys.readouterr().err
    assert rc == 1 and f"nor in the content store {ref}" in err, err
    assert len(server.requests) == asked


@pytest.mark.tools
@pytest.mark.slow
def test_two_workers_download_each_package_once(
        small_workload: Workload, server: RepoServer, registry: str, tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    config = _remote_config(tmp_path, small_workload, server.url)
    world = small_world(tmp_path, config)
    # The first two images, one per worker, need the same packages at the same moment.
    configs = [world[0], layered_variant(tmp_path, world[0], "twin", budget=None), *world[1:]]
    serial = build_many_json(configs, tmp_path / "serial", "--cache-dir", str(tmp_path / "c0"))
    alone = _apk_gets(server)
    ref = _ref(registry)
    server.delay = 0.1  # slow downloads: the two workers' fetches overlap
    doc = build_many_json(configs, tmp_path / "many", "--executor", "dask", "--workers", "2",
                      "--content-store", ref, "--cache-dir", str(tmp_path / "c"))
    downloads = _apk_gets(server) - alone

    print(f"{len(configs)} images on 2 workers: {len(downloads)} packages, "
          f"{sum(downloads.values())} downloads from the repository, "
          f"{_fetch(doc, 'store_hits')} pulled from the store, "
          f"{_fetch(doc, 'store_pushes')} pushed")
    assert len({i["worker"] for i in doc["images"]}) == 2  # both built
    assert downloads == Counter({name: 1 for name in alone})  # every package, each once
    assert _fetch(doc, "store_pushes") == len(alone)
    assert _fetch(doc, "store_refused") == 0
    assert _digests(doc) == _digests(serial)
    assert max(_blob_uploads(registry_log(registry, tmp_path)).values()) == 1


class _Manifests:
    """A stand-in registry holding one manifest (find_package reads nothing else)."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def find_manifest(self, repo: str, ref: str, accept: str) -> bytes | None:
        return self.raw


CHEX = "ab" * 20  # the hex SHA-1 of a `C:`


def _manifest(**changes: object) -> bytes:
    """A package manifest for CHEX, with top-level fields, `config_*`, `layer_*` or
    `checksum` replaced (None drops the field)."""
    doc: dict = {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.apkimage.apk.v1",
        "config": {"mediaType": "application/vnd.apkimage.apk.v1+json",
                   "digest": "sha256:" + "c" * 64, "size": 10},
        "layers": [{"mediaType": "application/vnd.apkimage.apk.v1.layer",
                    "digest": "sha256:" + "d" * 64, "size": 1234}],
        "annotations": {"dev.apkimage.apk.checksum":
                        "Q1" + base64.b64encode(bytes.fromhex(CHEX)).decode()}}
    for key, value in changes.items():
        if key.startswith("config_"):
            node, key = doc["config"], key.removeprefix("config_")
        elif key.startswith("layer_"):
            node, key = doc["layers"][0], key.removeprefix("layer_")
        elif key == "checksum":
            node, key = doc["annotations"], "dev.apkimage.apk.checksum"
        else:
            node = doc
        if value is None:
            del node[key]
        else:
            node[key] = value
    return json.dumps(doc).encode()


def _store_of(raw: bytes) -> RegistryContentStore:
    return RegistryContentStore("127.0.0.1:1/cache", registry=_Manifests(raw))  # type: ignore[arg-type]


LAYER = json.loads(_manifest())["layers"][0]


@pytest.mark.parametrize("raw, why", [
    (_manifest(artifactType="application/vnd.apkimage.layer-record.v1+json"), "artifact type"),
    (_manifest(config_mediaType="application/json"), "config media type"),
    (_manifest(layers=[]), "0 layers"),
    (_manifest(layers=[LAYER, LAYER]), "2 layers"),
    (_manifest(layer_mediaType="application/vnd.oci.image.layer.v1.tar+gzip"),
     "layer media type"),
    (_manifest(layer_size=-1), "size -1"),
    (_manifest(layer_size="1234"), "size '1234'"),
    (_manifest(layer_digest="sha256:../../x"), "malformed digest"),
    (_manifest(checksum=None), "names checksum None"),
    (_manifest(checksum="Q1" + "A" * 27 + "="), "names checksum 'Q1AAA"),
    (b"\xff not json", "not a package manifest"),
])
def test_a_manifest_that_is_no_package_of_this_checksum_is_corrupt(raw: bytes, why: str
                                                                    ) -> None:
    from builder.repo.store import CorruptEntry

    with pytest.raises(CorruptEntry, match="not a package manifest") as info:
        _store_of(raw).find_package(CHEX)
    assert why in str(info.value)
    assert f"127.0.0.1:1/cache:apk-{CHEX}" in str(info.value)


def test_a_package_manifest_is_read() -> None:
    from builder.errors import FormatError

    found = _store_of(_manifest()).find_package(CHEX)
    assert found is not None and (found.digest, found.size) == ("sha256:" + "d" * 64, 1234)
    with pytest.raises(FormatError):
        _store_of(_manifest()).find_package("../" + CHEX[3:])  # a tag is hex, nothing else
