"""Bad input: one clear error line naming the culprit, exit 1, no output left behind."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from builder.cli import main
from tests.helpers import GOLDEN, KEYS


def golden_copy(tmp_path: Path) -> Path:
    """A config + repository + key laid out as apko's test expects (./testdata/...)."""
    wd = tmp_path / "wd"
    (wd / "testdata").mkdir(parents=True)
    shutil.copytree(GOLDEN / "packages", wd / "testdata" / "packages")
    shutil.copy(GOLDEN / "melange.rsa.pub", wd / "testdata" / "melange.rsa.pub")
    shutil.copy(GOLDEN / "apko.yaml", wd / "apko.yaml")
    return wd


def run_failing(capsys: pytest.CaptureFixture[str], out: Path, argv: list[str]) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 1, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("apkimage: error: ")
    assert not out.exists(), "partial output left behind"
    leftovers = [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.tmp")]
    assert not leftovers
    return lines[0]


def build_argv(wd: Path, out: Path, *extra: str) -> list[str]:
    return ["build", str(wd / "apko.yaml"), "t:latest", str(out), "--arch", "x86_64",
            "--workdir", str(wd), "--cache-dir", str(wd / "cache"), *extra]


def test_unknown_config_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wd = golden_copy(tmp_path)
    (wd / "apko.yaml").write_text((wd / "apko.yaml").read_text() + "entrypont: {}\n")
    line = run_failing(capsys, tmp_path / "out", build_argv(wd, tmp_path / "out"))
    assert f"{wd / 'apko.yaml'}:" in line and "entrypont: unknown key" in line


def test_missing_package(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wd = golden_copy(tmp_path)
    line = run_failing(capsys, tmp_path / "out",
                       build_argv(wd, tmp_path / "out", "-p", "no-such-package"))
    assert "no-such-package" in line


def test_unsatisfiable_constraint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wd = golden_copy(tmp_path)
    line = run_failing(capsys, tmp_path / "out",
                       build_argv(wd, tmp_path / "out", "-p", "replayout>2.0"))
    assert "replayout" in line


@pytest.mark.slow  # the fetcher's retries and backoff: ~3 s
def test_unreachable_repository(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wd = golden_copy(tmp_path)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/repo"
    line = run_failing(capsys, tmp_path / "out", build_argv(wd, tmp_path / "out", "-r", url))
    assert f"127.0.0.1:{port}" in line


def test_bad_index_signature(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wd = golden_copy(tmp_path)
    # Same key name, different key: the index signature must not verify.
    shutil.copy(KEYS / "wolfi-signing.rsa.pub", wd / "testdata" / "melange.rsa.pub")
    line = run_failing(capsys, tmp_path / "out", build_argv(wd, tmp_path / "out"))
    assert "APKINDEX" in line and "signature" in line


def test_missing_keyring_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wd = golden_copy(tmp_path)
    (wd / "testdata" / "melange.rsa.pub").unlink()
    line = run_failing(capsys, tmp_path / "out", build_argv(wd, tmp_path / "out"))
    assert "melange.rsa.pub" in line


def test_tampered_package(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wd = golden_copy(tmp_path)
    apk = wd / "testdata" / "packages" / "x86_64" / "replayout-1.0.0-r0.apk"
    data = bytearray(apk.read_bytes())
    data[-40] ^= 0xFF  # inside the data section
    apk.write_bytes(bytes(data))
    line = run_failing(capsys, tmp_path / "out", build_argv(wd, tmp_path / "out"))
    assert "replayout" in line


def test_bad_build_date_and_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wd = golden_copy(tmp_path)
    line = run_failing(capsys, tmp_path / "out",
                       build_argv(wd, tmp_path / "out", "--build-date", "yesterday"))
    assert "--build-date" in line
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "something").write_text("x")
    rc = main(build_argv(wd, busy))
    assert rc == 1
    assert "not empty" in capsys.readouterr().err
    assert (busy / "something").read_text() == "x"
