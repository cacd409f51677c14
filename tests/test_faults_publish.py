"""Faults of `apkimage publish` against a real registry (Debian's docker-registry): wrong or
missing credentials push nothing; a publish killed with SIGKILL mid-upload leaves the tag on
the complete image it named before, and publishing again completes, skipping what arrived."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from builder.oci.image import MEDIA_INDEX, MEDIA_MANIFEST
from tests.helpers import (
    GOLDEN_REPO,
    RepoServer,
    golden_http_config,
    make_htpasswd,
    require_tool,
    run_apkimage,
    run_registry,
)

pytestmark = pytest.mark.tools

ACCEPT = f"{MEDIA_INDEX}, {MEDIA_MANIFEST}"


@pytest.fixture(scope="module")
def golden_server() -> Iterator[RepoServer]:
    with RepoServer(GOLDEN_REPO) as srv:
        yield srv


def docker_config(path: Path, host: str, user: str, password: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (path / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return path


def storage(base: str, tmp_path: Path) -> Path:
    """Where run_registry's registry keeps what it was sent."""
    port = base.rsplit(":", 1)[1]
    return tmp_path / f"registry-{port}" / "storage" / "docker" / "registry" / "v2"


def tag_target(base: str, repo: str, tag: str, auth: tuple[str, str] | None = None
               ) -> str | None:
    """The digest `repo:tag` names once every manifest, config and layer it reaches is
    there (checked), or None when the tag does not exist."""
    s = requests.Session()
    s.auth = auth
    r = s.get(f"{base}/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT}, timeout=10)
    if r.status_code == 404:
        return None
    assert r.status_code == 200, (r.status_code, r.text)
    index = r.json()
    assert index["mediaType"] == MEDIA_INDEX
    for m in index["manifests"]:
        got = s.get(f"{base}/v2/{repo}/manifests/{m['digest']}", headers={"Accept": ACCEPT},
                    timeout=10)
        assert got.status_code == 200, f"the tag names an index whose {m['digest']} is missing"
        manifest = got.json()
        for blob in [manifest["config"], *manifest["layers"]]:
            head = s.head(f"{base}/v2/{repo}/blobs/{blob['digest']}", timeout=10)
            assert head.status_code == 200, f"the tag's image lacks blob {blob['digest']}"
    return r.headers["Docker-Content-Digest"]


def publish_args(config: Path, ref: str, cache: Path, *extra: str) -> list[str]:
    return ["publish", str(config), ref, "--cache-dir", str(cache), "--impl", "fast", *extra]


@pytest.mark.parametrize("credentials", ["wrong", "none"])
def test_publish_with_bad_credentials_pushes_nothing(golden_server: RepoServer, tmp_path: Path,
                                                     credentials: str) -> None:
    require_tool("docker-registry", "htpasswd")
    config = golden_http_config(tmp_path / "apko.yaml", golden_server.url)
    with run_registry(tmp_path, htpasswd=make_htpasswd(tmp_path, "bob", "hunter2")) as base:
        host = base.removeprefix("http://")
        dc = docker_config(tmp_path / "dc", host, "bob", "wrong") if credentials == "wrong" \
            else tmp_path / "no-docker-config"
        proc = run_apkimage(*publish_args(config, f"{host}/faults/img:v1", tmp_path / "cache"),
                            env={"DOCKER_CONFIG": str(dc)})
        assert proc.returncode == 1, proc.stderr
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("apkimage: error: "), proc.stderr
        line = lines[0]
        assert f"registry {host}: access to repository 'faults/img' refused (401" in line, line
        if credentials == "wrong":
            assert "credentials rejected" in line and "with credentials from" in line, line
        else:
            assert "no credentials" in line and "without credentials" in line, line
        assert str(dc / "config.json") in line  # where the credentials were looked for
        assert proc.stdout == ""
        v2 = storage(base, tmp_path)
        assert not (v2 / "blobs").exists() and not (v2 / "repositories").exists(), \
            "a refused publish stored something"
        assert tag_target(base, "faults/img", "v1", auth=("bob", "hunter2")) is None


# Fault points of a publish of the golden image (two arches) whose layers and configs are all
# new: 4 blobs each opened (POST) and sent (PUT), 2 manifests put by digest, then the index
# put under the tag: 11 (builder/faults.py). With 4 uploads at once, which requests are in
# flight at a kill below 9 varies; the outcome must not.
# 12 is the end of the publish span: the tag is put, the process dies before it prints.
KILL_AT = [1, 2, 5, 8, 9, 11, 12]


@pytest.mark.slow  # ~3 s each: a registry, three publishes
@pytest.mark.parametrize("point", KILL_AT)
def test_publish_killed_mid_upload_leaves_the_tag_whole(golden_server: RepoServer,
                                                        tmp_path: Path, point: int) -> None:
    require_tool("docker-registry")
    config = golden_http_config(tmp_path / "apko.yaml", golden_server.url)
    cache = tmp_path / "cache"
    (tmp_path / "tmp").mkdir()
    env = {"DOCKER_CONFIG": str(tmp_path / "no-docker-config"), "TMPDIR": str(tmp_path / "tmp")}
    with run_registry(tmp_path) as base:
        ref = f"{base.removeprefix('http://')}/faults/img:v1"
        first = run_apkimage(*publish_args(config, ref, cache), env=env)
        assert first.returncode == 0, first.stderr
        image_a = first.stdout.strip()
        assert tag_target(base, "faults/img", "v1") == image_a

        # image B: another package set, so every layer and config is new
        other = ("-p", "custom-ca-certs-1", "--json")
        killed = run_apkimage(*publish_args(config, ref, cache, *other),
                              env={**env, "APKIMAGE_FAULT_KILL": f"publish:{point}"})
        assert killed.returncode == -9, killed.stderr[-2000:]
        at_kill = tag_target(base, "faults/img", "v1")
        if point <= 11:
            assert at_kill == image_a, "a killed publish moved the tag"
        assert len(list((tmp_path / "tmp").glob("apkimage-publish-*"))) == 1  # its work dir

        again = run_apkimage(*publish_args(config, ref, cache, *other), env=env)
        assert again.returncode == 0, again.stderr
        summary = json.loads(again.stdout)
        image_b = summary["index_digest"]
        assert image_b != image_a
        if point == 12:
            assert at_kill == image_b  # the tag moved with the last request, to all of B
        assert tag_target(base, "faults/img", "v1") == image_b
        pushed = summary["pushed"]
        assert len(pushed["uploaded"]) + len(pushed["skipped"]) == 4
        if point >= 9:  # every blob had arrived: the publish again sends none
            assert pushed["uploaded"] == [], pushed
        if point == 1:  # killed before anything was sent
            assert len(pushed["uploaded"]) == 4, pushed
    assert list((tmp_path / "tmp").iterdir()) == [], "the killed publish's work dir stayed"
