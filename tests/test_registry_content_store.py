"""RegistryContentStore (builder/oci/content_store.py) on Debian's docker-registry: the
ContentStore contract (has, verified open, digest-checked put that uploads a blob once) and
layer records: found, missing, and damaged ones reported as damaged, never trusted."""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path

import pytest

from builder.oci.content_store import MEDIA_MANIFEST, RegistryContentStore, record_tag
from builder.repo.store import (
    BlobNotFound,
    ContentStore,
    CorruptEntry,
    DigestMismatch,
    LocalContentStore,
)
from tests.helpers import require_tool, run_registry

pytestmark = [pytest.mark.tools]


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_contract_and_records(tmp_path: Path) -> None:
    require_tool("docker-registry")
    body = b"layer bytes " * 1000
    with run_registry(tmp_path) as base:
        store = RegistryContentStore(base.removeprefix("http://") + "/cache")
        assert isinstance(store, ContentStore)
        d = _digest(body)
        assert not store.has(d)
        with pytest.raises(BlobNotFound):
            store.open(d)
        with pytest.raises(DigestMismatch):
            store.put(body, _digest(b"other"))
        assert not store.has(d)  # nothing sent
        assert store.put(io.BytesIO(body)) == d and store.has(d)
        assert store.put(body, d) == d  # already there: HEAD, no second upload
        assert store.uploaded == [d]
        with store.open(d) as f:
            assert f.read() == body
        local = LocalContentStore(tmp_path / "local")
        assert store.copy_into(d, local) and local.read_bytes(d) == body
        assert not store.copy_into(_digest(b"absent"), local)

        key = "ab" * 32
        assert store.get_record(key) is None
        record = json.dumps({"digest": d, "key": key}).encode()
        store.put_record(key, record, d, len(body), "application/vnd.oci.image.layer.v1.tar")
        assert store.get_record(key) == record

        # A manifest under a record's tag that is not a record: damaged, not trusted.
        other = "cd" * 32
        cfg = b"{}"
        store.put(cfg)
        bogus = json.dumps({"schemaVersion": 2, "mediaType": MEDIA_MANIFEST,
                            "config": {"mediaType": "application/json", "digest": _digest(cfg),
                                       "size": 2},
                            "layers": []}).encode()
        store.registry.put_manifest(store.repo, record_tag(other), bogus, MEDIA_MANIFEST)
        with pytest.raises(CorruptEntry, match="not a layer record"):
            store.get_record(other)
        log = (tmp_path / f"registry-{base.rsplit(':', 1)[1]}" / "registry.log").read_text()
    uploads = re.findall(r'"PUT /v2/cache/blobs/uploads/[^ "]*digest=sha256%3A([0-9a-f]{64})',
                         log)
    assert uploads.count(d.split(":")[1]) == 1


def test_bad_names_are_refused() -> None:
    from builder.errors import FormatError, RegistryError

    with pytest.raises(RegistryError, match="not a tag"):
        RegistryContentStore("127.0.0.1:5000/cache:latest")
    with pytest.raises(FormatError):
        record_tag("../../x")
