"""Unpack OCI images with umoci and compare the resulting trees (DESIGN.md invariant 4)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
from pathlib import Path


def unpack(layout: Path, manifest_digest: str, dest: Path) -> Path:
    """`umoci unpack` one manifest of an OCI layout into `dest`; returns the rootfs.

    Our layout's index.json is the image index; umoci resolves tags through it, so a tagged
    copy of index.json pointing at the one manifest is written first (the blobs are shared)."""
    blob = layout / "blobs" / "sha256" / manifest_digest.split(":")[1]
    tagged = dest.parent / f"{dest.name}-layout"
    tagged.mkdir(parents=True)
    (tagged / "blobs").symlink_to(layout.resolve() / "blobs")
    (tagged / "oci-layout").write_bytes((layout / "oci-layout").read_bytes())
    (tagged / "index.json").write_text(json.dumps({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": manifest_digest, "size": blob.stat().st_size,
                       "annotations": {"org.opencontainers.image.ref.name": "img"}}]}))
    rootless = [] if os.geteuid() == 0 else ["--rootless"]
    proc = subprocess.run(["umoci", "unpack", *rootless, "--image", f"{tagged}:img", str(dest)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"umoci unpack failed: {proc.stderr.strip()}")
    return dest / "rootfs"


def snapshot(root: Path) -> dict[str, tuple]:
    """path -> (type, mode, uid, gid, mtime, content digest | link target | device), plus
    hardlink groups under the key "<hardlinks>"."""
    tree: dict[str, tuple] = {}
    inodes: dict[int, list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            rel = str(full.relative_to(root))
            st = os.lstat(full)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISREG(st.st_mode):
                what = ("file", hashlib.sha256(full.read_bytes()).hexdigest())
                if st.st_nlink > 1:
                    inodes.setdefault(st.st_ino, []).append(rel)
            elif stat.S_ISLNK(st.st_mode):
                what, mode = ("symlink", os.readlink(full)), 0
            elif stat.S_ISDIR(st.st_mode):
                what = ("dir", "")
            else:
                what = ("node", st.st_rdev)
            tree[rel] = (*what, mode, st.st_uid, st.st_gid, st.st_mtime_ns)
    tree["<hardlinks>"] = tuple(sorted(tuple(sorted(v)) for v in inodes.values()))
    return tree


def differences(a: dict[str, tuple], b: dict[str, tuple], limit: int = 20) -> list[str]:
    out = []
    for path in sorted(set(a) | set(b)):
        if a.get(path) != b.get(path):
            out.append(f"{path}: {a.get(path)} != {b.get(path)}")
            if len(out) >= limit:
                break
    return out
