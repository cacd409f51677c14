"""`apkimage install-keys`: keys discovered from Alpine's releases.json and from
`<repo>/apk-configuration` (a JSON Web Key Set), written under ROOT/etc/apk/keys, against
a local server shaped like both."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from builder.apk.signing import generate_key, public_pem, sign
from builder.cli import main
from builder.repo.keydiscovery import DiscoveredKey, alpine_branch, dedupe


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A directory served on 127.0.0.1: files as they are, anything missing a 404, and a
    path whose `<path>.status` file holds a code answered with that status."""
    root = tmp_path / "site"
    root.mkdir()

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *a: object, **kw: object) -> None:
            super().__init__(*a, directory=str(root), **kw)  # type: ignore[arg-type]

        def do_GET(self) -> None:
            status = root / (self.path.lstrip("/") + ".status")
            if status.is_file():
                self.send_error(int(status.read_text()))
                return
            super().do_GET()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _b64url(n: int) -> str:
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _jwk(kid: str, pub_pem: bytes) -> dict:
    numbers = load_pem_public_key(pub_pem).public_numbers()  # type: ignore[union-attr]
    return {"kty": "RSA", "kid": kid, "n": _b64url(numbers.n), "e": _b64url(numbers.e)}


def _verifies(pem: bytes, private: bytes) -> bool:
    message = b"an index's control member"
    load_pem_public_key(pem).verify(  # type: ignore[union-attr]
        sign(private, message), message, padding.PKCS1v15(), hashes.SHA256())
    return True


def test_alpine_and_discovered_keys(site: tuple[Path, str], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    root_dir, base = site
    alpine_priv, alpine_pub = generate_key(2048)
    old_priv, old_pub = generate_key(2048)
    cg_priv, cg_pub = generate_key(2048)
    (root_dir / "keys").mkdir()
    (root_dir / "keys" / "alpine-devel@alpinelinux.org-6165ee59.rsa.pub").write_bytes(alpine_pub)
    (root_dir / "keys" / "old@alpinelinux.org-1.rsa.pub").write_bytes(old_pub)
    releases = {"release_branches": [
        {"rel_branch": "v3.21", "keys": {
            # Alpine's published URLs say %20 where they mean @.
            "x86_64": [{"url": f"{base}/keys/alpine-devel%20alpinelinux.org-6165ee59.rsa.pub"},
                       {"url": f"{base}/keys/old@alpinelinux.org-1.rsa.pub",
                        "deprecated_since": "2020-01-01"}],
            "aarch64": [{"url": f"{base}/keys/not-for-x86_64.rsa.pub"}]}},
        {"rel_branch": "v3.20", "keys": {"x86_64": [{"url": f"{base}/keys/wrong-branch.pub"}]}},
    ]}
    (root_dir / "releases.json").write_text(json.dumps(releases))
    (root_dir / "os").mkdir()
    (root_dir / "os" / "apk-configuration").write_text(json.dumps({"jwks_uri": f"{base}/jwks"}))
    (root_dir / "jwks").write_text(json.dumps({"keys": [_jwk("chainguard-abc", cg_pub)]}))

    system = tmp_path / "system"
    (system / "etc/apk").mkdir(parents=True)
    (system / "etc/apk/repositories").write_text(
        f"# a comment\n{base}/alpine/v3.21/main\n\n@cg {base}/os\n")
    rc = main(["install-keys", "--root", str(system), "--arch", "x86_64",
               "--alpine-releases-url", f"{base}/releases.json", "--json"])
    assert rc == 0, capsys.readouterr().err
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["alpine-devel@alpinelinux.org-6165ee59.rsa.pub",
                                         "chainguard-abc.rsa.pub"]
    assert rows[1]["url"] == f"{base}/os/chainguard-abc.rsa.pub"
    keys = system / "etc/apk/keys"
    assert sorted(p.name for p in keys.iterdir()) == [r["name"] for r in rows]
    alpine_key = (keys / rows[0]["name"]).read_bytes()
    assert alpine_key == alpine_pub and _verifies(alpine_key, alpine_priv)
    cg_key = (keys / rows[1]["name"]).read_bytes()
    assert cg_key == public_pem(cg_priv) and _verifies(cg_key, cg_priv)
    assert (keys / rows[1]["name"]).stat().st_mode & 0o777 == 0o644


def test_dry_run_writes_nothing(site: tuple[Path, str], tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    root_dir, base = site
    _, pub = generate_key(2048)
    (root_dir / "repo").mkdir()
    (root_dir / "repo" / "apk-configuration").write_text(json.dumps({"jwks_uri": f"{base}/j"}))
    (root_dir / "j").write_text(json.dumps({"keys": [_jwk("k1", pub)]}))
    system = tmp_path / "system"
    rc = main(["install-keys", "--root", str(system), "-r", f"{base}/repo", "--dry-run"])
    assert rc == 0
    assert capsys.readouterr().out == f"k1.rsa.pub\t{base}/repo/k1.rsa.pub\n"
    assert not (system / "etc/apk/keys").exists()


@pytest.mark.parametrize("case, files, words", [
    ("discovery fails", {}, "HTTP 500"),
    ("no jwks_uri", {"repo/apk-configuration": "{}"}, "no jwks_uri"),
    ("kid escapes", {"repo/apk-configuration": '{"jwks_uri": "BASE/j"}',
                     "j": '{"keys": [{"kty": "RSA", "kid": "../../etc/passwd", "n": "AQAB", '
                          '"e": "AQAB"}]}'}, "not a plain file name"),
    ("not RSA", {"repo/apk-configuration": '{"jwks_uri": "BASE/j"}',
                 "j": '{"keys": [{"kty": "EC", "kid": "k"}]}'}, "not RSA"),
    ("not JSON", {"repo/apk-configuration": "<html>"}, "not JSON"),
])
def test_bad_discovery_is_refused(site: tuple[Path, str], tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str], case: str,
                                  files: dict[str, str], words: str) -> None:
    root_dir, base = site
    for name, text in files.items():
        (root_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (root_dir / name).write_text(text.replace("BASE", base))
    if not files:
        (root_dir / "repo").mkdir()
        (root_dir / "repo" / "apk-configuration.status").write_text("500")
    repo = f"{base}/repo"
    system = tmp_path / "system"
    rc = main(["install-keys", "--root", str(system), "-r", repo, "--timeout", "5"])
    err = capsys.readouterr().err
    assert rc == 1, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("apkimage: error: ") and words in line, (case, err)
    assert not (system / "etc/apk/keys").exists()
    assert not (tmp_path / "etc").exists()


def test_no_repositories(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["install-keys", "--root", str(tmp_path)])
    assert rc == 1
    assert "etc/apk/repositories: no repositories" in capsys.readouterr().err


def test_branch_and_dedupe_rules() -> None:
    assert alpine_branch("https://dl-cdn.alpinelinux.org/alpine/v3.21/main") == "v3.21"
    assert alpine_branch("https://dl-cdn.alpinelinux.org/alpine/edge/community/") == "edge"
    assert alpine_branch("https://packages.wolfi.dev/os") is None
    keys = [DiscoveredKey("a.rsa.pub", b"2", "u2"), DiscoveredKey("a.rsa.pub", b"1", "u1"),
            DiscoveredKey("a.rsa.pub", b"1", "u1-again"), DiscoveredKey("b", b"1", "u"),
            DiscoveredKey("b", b"0", "u")]
    assert [(k.name, k.pem) for k in dedupe(keys)] == [
        ("a.rsa.pub", b"1"), ("a-2.rsa.pub", b"2"), ("b", b"0"), ("b-2", b"1")]
