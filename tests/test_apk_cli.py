"""`apkimage verify` and `apkimage index` exit codes and output."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder import cli
from builder.apk.index import index_record_from_apk, read_index
from builder.apk.package import read_apk
from builder.apk.signing import Keyring, generate_key
from builder.apk.writer import DataEntry, build_apk
from tests.helpers import FIXTURES, GOLDEN, KEYS

APK = FIXTURES / "apk"


@pytest.fixture(autouse=True)
def only_these_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register only verify/index, so these tests do not depend on other subcommands."""
    monkeypatch.setattr(cli, "COMMANDS", ["verify", "index"])


def main(argv: list[str]) -> int:
    return cli.main(argv)


def test_verify_ok(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["verify", str(APK / "alpine/strace-5.17-r0.apk"), "--keyring", str(KEYS)])
    out = capsys.readouterr().out
    assert rc == 0
    assert out == (
        "strace-5.17-r0: OK (signed by alpine-devel@lists.alpinelinux.org-6165ee59.rsa.pub, "
        "2 files, datahash ok)\n"
    )


def test_verify_several_keyrings_and_index(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(
        [
            "verify",
            str(GOLDEN / "packages/x86_64/replayout-1.0.0-r0.apk"),
            str(GOLDEN / "packages/x86_64/APKINDEX.tar.gz"),
            "--keyring",
            str(KEYS / "wolfi-signing.rsa.pub"),
            "--keyring",
            str(GOLDEN / "melange.rsa.pub"),
        ]
    )
    lines = capsys.readouterr().out.splitlines()
    assert rc == 0
    assert lines[0] == "replayout-1.0.0-r0: OK (signed by melange.rsa.pub, 2 files, datahash ok)"
    assert lines[1].endswith("APKINDEX.tar.gz: OK (signed by melange.rsa.pub, 4 packages)")


@pytest.mark.parametrize("name", ["aws-c-s3-0.4.9-r0.apk", "neon-4604-r0.apk"])
def test_verify_negative_fails(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["verify", str(APK / "negative" / name), "--keyring", str(KEYS)])
    err = capsys.readouterr().err
    assert rc == 1
    assert "package signature mismatch" in err and name.rsplit("-", 1)[0] in err


def test_verify_unsigned_needs_flag(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(APK / "melange-local/hello-0.1.0-r0.apk")
    assert main(["verify", path, "--keyring", str(KEYS)]) == 1
    assert "hello-0.1.0-r0: package is not signed" in capsys.readouterr().err
    assert main(["verify", path, "--keyring", str(KEYS), "--allow-unsigned"]) == 0
    assert capsys.readouterr().out == "hello-0.1.0-r0: OK (unsigned, 1 files, datahash ok)\n"


def test_verify_missing_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(tmp_path / "x.apk"), "--keyring", str(KEYS)]) == 1
    assert "x.apk: cannot read" in capsys.readouterr().err
    assert main(["verify", str(APK / "wolfi/libcap-2.69-r0.apk"), "--keyring", "/nope"]) == 1
    assert "/nope: keyring path does not exist" in capsys.readouterr().err


def test_index_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    private, public = generate_key(2048)
    key = tmp_path / "repo.rsa"
    key.write_bytes(private)
    (tmp_path / "repo.rsa.pub").write_bytes(public)
    repo = tmp_path / "x86_64"
    repo.mkdir()
    for name, arch in [("one", "x86_64"), ("two", "x86_64"), ("three", "aarch64")]:
        fields = {"pkgname": [name], "pkgver": ["1.0-r0"], "arch": [arch]}
        raw = build_apk(fields, [DataEntry(f"usr/{name}", data=name.encode())], private, "x")
        (repo / f"{name}-1.0-r0.apk").write_bytes(raw)
    rc = main(
        ["index", str(repo), "--signing-key", str(key), "--description", "test repo"]
        + ["--arch", "x86_64"]
    )
    captured = capsys.readouterr()
    assert rc == 0
    assert "skipping three-1.0-r0.apk: arch aarch64" in captured.err
    assert captured.out.endswith("2 packages, signed as repo.rsa.pub\n")
    ring = Keyring.from_paths([tmp_path / "repo.rsa.pub"])
    index = read_index((repo / "APKINDEX.tar.gz").read_bytes(), ring, "written")
    assert index.description == "test repo" and index.signers == ["repo.rsa.pub"]
    for pkg in index.packages:
        data = (repo / pkg.filename).read_bytes()
        assert pkg.checksum == index_record_from_apk(read_apk(data, "x")).checksum
        assert pkg.size == len(data)
    assert [p.name for p in index.packages] == ["one", "two"]
    rc = main(["verify", str(repo / "APKINDEX.tar.gz"), "--keyring", str(tmp_path)])
    assert rc == 0
