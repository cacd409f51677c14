"""Indexes are verified and parsed once per content: a later build that gets the same bytes
loads the memo (no signature check, no cryptography import); other bytes, other keys or a
damaged memo mean a full check again."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from builder.apk import index as apk_index
from builder.apk.signing import Keyring
from builder.errors import VerificationError
from builder.repo.fetch import Fetcher
from builder.repo.indexes import load_indexes
from builder.repo.repository import Repository
from tests.helpers import GOLDEN, GOLDEN_REPO, REPO_ROOT, golden_workdir

KEY = GOLDEN / "melange.rsa.pub"


def _keyring(pem: bytes | None = None) -> Keyring:
    ring = Keyring()
    ring.add("melange.rsa.pub", pem or KEY.read_bytes())
    return ring


def _load(cache: Path, repo: Path, ring: Keyring) -> list:
    with Fetcher(str(cache)) as f:
        return load_indexes([Repository(str(repo))], "x86_64", ring, f)


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = apk_index.read_index

    def counting(data, keyring, source, allow_untrusted=False):  # noqa: ANN001, ANN202
        calls.append(source)
        return real(data, keyring, source, allow_untrusted=allow_untrusted)

    monkeypatch.setattr(apk_index, "read_index", counting)
    return calls


def test_second_load_uses_the_memo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _counting(monkeypatch)
    first = _load(tmp_path / "cache", GOLDEN_REPO, _keyring())
    again = _load(tmp_path / "cache", GOLDEN_REPO, _keyring())
    assert len(calls) == 1 and again == first and len(first) == 4
    memos = list((tmp_path / "cache").rglob("index-parsed/*/*.json"))
    assert len(memos) == 1


def test_other_bytes_other_keys_or_damage_verify_again(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _counting(monkeypatch)
    cache = tmp_path / "cache"
    _load(cache, GOLDEN_REPO, _keyring())
    # A changed index (here: another repository's bytes in the same place) is noticed.
    repo = tmp_path / "repo"
    (repo / "x86_64").mkdir(parents=True)
    (repo / "x86_64" / "APKINDEX.tar.gz").write_bytes(
        (GOLDEN_REPO / "aarch64" / "APKINDEX.tar.gz").read_bytes())
    _load(cache, repo, _keyring())
    assert len(calls) == 2
    # Another keyring: the memo made with the right key does not vouch; the check fails.
    from builder.apk.signing import generate_key

    _, other = generate_key(1024)
    with pytest.raises(VerificationError, match="signature mismatch"):
        _load(cache, GOLDEN_REPO, _keyring(other))
    assert len(calls) == 3
    # A damaged memo is ignored: verified again, and rewritten whole.
    memo = next(p for p in cache.rglob("index-parsed/*/*.json")
                if json.loads(p.read_bytes().partition(b"\n")[0])["index_sha256"] ==
                __import__("hashlib").sha256((GOLDEN_REPO / "x86_64" / "APKINDEX.tar.gz")
                                             .read_bytes()).hexdigest())
    raw = memo.read_bytes()
    memo.write_bytes(raw.replace(b"replayout", b"evilpkg99"))
    got = _load(cache, GOLDEN_REPO, _keyring())
    assert len(calls) == 4 and "replayout" in {p.name for p in got}
    assert memo.read_bytes() == raw


def test_hot_build_does_not_load_cryptography(tmp_path: Path) -> None:
    wd = golden_workdir(tmp_path)
    code = ("import sys\nfrom builder.cli import main\n"
            f"rc = main(['build', {str(wd / 'testdata' / 'apko.yaml')!r}, 't', sys.argv[1], "
            f"'--workdir', {str(wd)!r}, '--cache-dir', {str(tmp_path / 'cache')!r}, "
            "'--impl', 'fast'])\n"
            "print(rc, 'cryptography' in sys.modules)\n")
    outs = [subprocess.run([sys.executable, "-c", code, str(tmp_path / f"out{i}")],
                           cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
            for i in range(2)]
    assert outs == ["0 True\n", "0 False\n"]
