"""Hostile sizes (issue 13): a gzip bomb in the data or control section, a huge .PKGINFO or
APKINDEX field, an index that inflates without end, a data tar of too many entries. Each is
refused by counting while it streams — the bomb's peak memory stays small — with one error
line naming the file, the limit and `--limit NAME=VALUE`; a raised limit lets a legitimate
input through. Every case runs in each profile."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from builder import limits
from builder.apk.index import format_index, index_record_from_apk
from builder.apk.package import read_apk
from builder.apk.signing import sign, signature_member
from builder.deflate.gzipstream import gzip_member
from builder.gotar import END_MARKER, file_entry
from tests.helpers import (
    REPO_ROOT,
    apk_sections,
    hostile_apk,
    hostile_repo,
    index_record,
    layout_tree,
    refused,
    tar_entry,
    tree_state,
    zero_member,
)

IMPLS = ["reference", "fast", "stitched"]
USR = tar_entry("usr", "5", mode=0o755)
GOOD = USR + tar_entry("usr/good", data=b"good\n")
GIB = 1 << 30


@pytest.fixture(params=IMPLS)
def impl(request: pytest.FixtureRequest) -> str:
    return request.param


def argv(cfg: Path, tmp: Path, impl: str, *extra: str) -> list[str]:
    return ["build", str(cfg), "t:latest", str(tmp / "out"), "--cache-dir", str(tmp / "cache"),
            "--impl", impl, *extra]


# The child reports its own high-water mark (VmHWM of its address space) as it exits: the
# ru_maxrss wait4 gives would start from the forking pytest worker's peak, which Linux hands
# on across fork and exec.
_PEAK_CHILD = """
import atexit, sys
def report():
    with open('/proc/self/status') as f:
        hwm = next(line for line in f if line.startswith('VmHWM:'))
    with open(sys.argv[1], 'w') as out:
        out.write(hwm.split()[1])
atexit.register(report)
from builder.cli import main
sys.exit(main(sys.argv[2:]))
"""


def run_peak(args: list[str]) -> tuple[int, str, int]:
    """`apkimage ARGS` in a child process: (exit status, stderr, the child's own peak RSS in
    KiB, as its VmHWM when it exits)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="apkimage-peak-") as d:
        peak = Path(d) / "peak-kib"
        proc = subprocess.run([sys.executable, "-c", _PEAK_CHILD, str(peak), *args],
                              cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, timeout=600)
        return proc.returncode, proc.stderr, int(peak.read_text())


def bomb_apk(key: tuple[bytes, bytes], size: int) -> bytes:
    """A valid package whose data tar holds one file of `size` zero bytes: the tar headers
    in a first gzip member, the zeros in a second (~1/1000 of their size), the end marker in
    a third."""
    head = USR + tar_entry("usr/zero", data=b"", size=size, checksum=False)
    data = gzip_member(head) + zero_member(size) + gzip_member(END_MARKER)
    return hostile_apk("bomb", None, key, data=data)


def test_limits_parse_and_show() -> None:
    got = limits.parse(["data-size=64M", "entries=10", "field_size=2k"])
    assert (got.data_size, got.entries, got.field_size) == (64 << 20, 10, 2048)
    assert limits.show("data-size", limits.Limits().data_size) == "32G"
    for bad in ["nope=1", "data-size", "data-size=-1", "entries=5M", "data-size=lots"]:
        with pytest.raises(ValueError, match="--limit"):
            limits.parse([bad])


def test_bad_limit_flag_is_a_usage_error(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from builder.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["build", "x.yaml", "t", str(tmp_path / "o"), "--limit", "data-size=huge"])
    assert exc.value.code == 2
    assert "--limit data-size: expected a whole number" in capsys.readouterr().err


def test_data_gzip_bomb(impl: str, tmp_path: Path, signing_key: tuple[bytes, bytes]) -> None:
    """An 8 MB package inflating to 8 GiB, with --limit data-size=64M: refused at 64 MiB,
    in a process whose peak memory stays far below the bomb (and below the limit), leaving
    no temp file in the cache and nothing outside it."""
    apk = bomb_apk(signing_key, 8 * GIB)
    assert len(apk) < 16 << 20
    cfg = hostile_repo(tmp_path, {"bomb-1.0-r0.apk": apk}, signing_key, ["bomb"])
    before = tree_state(tmp_path, skip=(tmp_path / "cache",))
    rc, err, peak_kib = run_peak(argv(cfg, tmp_path, impl, "--limit", "data-size=64M"))
    lines = err.strip().splitlines()
    assert rc == 1 and len(lines) == 1, err
    path = tmp_path / "repo" / "x86_64" / "bomb-1.0-r0.apk"
    assert lines[0].startswith(f"apkimage: error: bomb-1.0-r0 ({path}): data section: "
                               "inflated data section exceeds the data-size limit (64M); "
                               "raise it with --limit data-size=VALUE"), err
    assert 10 * 1024 < peak_kib < 200 * 1024, f"peak RSS {peak_kib} KiB while refusing the bomb"
    assert not (tmp_path / "out").exists()
    assert tree_state(tmp_path, skip=(tmp_path / "cache",)) == before
    leftovers = [p for p in (tmp_path / "cache").rglob("*") if p.name.startswith(".tmp-")]
    assert leftovers == []


def test_control_gzip_bomb(impl: str, tmp_path: Path, signing_key: tuple[bytes, bytes],
                           capsys: pytest.CaptureFixture[str]) -> None:
    """A control member inflating to 1 GiB: refused at the default control-size (64M)."""
    sig, _, data = apk_sections("bomb", GOOD, None)
    control = zero_member(GIB)
    apk = sig + control + data
    cfg = hostile_repo(tmp_path, {"bomb-1.0-r0.apk": apk}, signing_key, ["bomb"],
                       records=[index_record("bomb", "1.0-r0", apk, control)])
    line = refused(capsys, argv(cfg, tmp_path, impl))
    path = tmp_path / "repo" / "x86_64" / "bomb-1.0-r0.apk"
    assert f"{path}: inflated gzip member at byte 0 exceeds the control-size limit (64M); " \
        "raise it with --limit control-size=VALUE" in line, line
    assert not (tmp_path / "out").exists()


def test_huge_pkginfo_field(impl: str, tmp_path: Path, signing_key: tuple[bytes, bytes],
                            capsys: pytest.CaptureFixture[str]) -> None:
    """A 2 MiB pkgdesc: refused at the default field-size (1M), built with field-size=4M."""
    desc = "x" * (2 << 20)
    sig, control, data = apk_sections("wordy", GOOD, signing_key, fields={"pkgdesc": [desc]})
    apk = sig + control + data
    cfg = hostile_repo(tmp_path, {"wordy-1.0-r0.apk": apk}, signing_key, ["wordy"],
                       records=[index_record("wordy", "1.0-r0", apk, control)])
    line = refused(capsys, argv(cfg, tmp_path, impl))
    path = tmp_path / "repo" / "x86_64" / "wordy-1.0-r0.apk"
    assert f"{path}:.PKGINFO:" in line and "line (pkgdesc) exceeds the field-size limit " \
        "(1M); raise it with --limit field-size=VALUE" in line, line
    from builder.cli import main

    assert main(argv(cfg, tmp_path, impl, "--limit", "field-size=4M")) == 0
    assert layout_tree(tmp_path / "out")["usr/good"][1] == b"good\n"


def _index(text: bytes, key: tuple[bytes, bytes]) -> bytes:
    body = gzip_member(file_entry("DESCRIPTION", b"") + file_entry("APKINDEX", text)
                       + END_MARKER)
    return signature_member("local.rsa.pub", sign(key[0], body, "sha256")) + body


def test_huge_index_field(impl: str, tmp_path: Path, signing_key: tuple[bytes, bytes],
                          capsys: pytest.CaptureFixture[str]) -> None:
    apk = hostile_apk("evil", GOOD, signing_key)
    rec = index_record_from_apk(read_apk(apk, "evil"), len(apk))
    rec.description = "y" * (3 << 20)
    cfg = hostile_repo(tmp_path, {"evil-1.0-r0.apk": apk}, signing_key, ["evil"],
                       index=_index(format_index([rec]).encode(), signing_key))
    line = refused(capsys, argv(cfg, tmp_path, impl))
    where = tmp_path / "repo" / "x86_64" / "APKINDEX.tar.gz"
    assert f"{where}:APKINDEX:" in line and "index line ('T:'...) exceeds the field-size " \
        "limit (1M)" in line, line


@pytest.mark.parametrize("command,impl", [*(("build", i) for i in IMPLS), ("resolve", ""),
                                          ("lock", "")])
def test_index_bomb(command: str, impl: str, tmp_path: Path,
                    signing_key: tuple[bytes, bytes],
                    capsys: pytest.CaptureFixture[str]) -> None:
    """A signed APKINDEX.tar.gz whose body inflates to 1 GiB, with index-size=16M: refused
    by build (each profile), resolve and lock alike, at 16 MiB."""
    body = zero_member(GIB)
    index = signature_member("local.rsa.pub", sign(signing_key[0], body, "sha256")) + body
    apk = hostile_apk("evil", GOOD, signing_key)
    cfg = hostile_repo(tmp_path, {"evil-1.0-r0.apk": apk}, signing_key, ["evil"],
                       index=index)
    args = {"build": argv(cfg, tmp_path, impl),
            "resolve": ["resolve", str(cfg), "--cache-dir", str(tmp_path / "cache")],
            "lock": ["lock", str(cfg), "-o", str(tmp_path / "lock.json"), "--cache-dir",
                     str(tmp_path / "cache")]}[command]
    line = refused(capsys, [*args, "--limit", "index-size=16M"])
    where = tmp_path / "repo" / "x86_64" / "APKINDEX.tar.gz"
    assert f"{where}: inflated index exceeds the index-size limit (16M); raise it with " \
        "--limit index-size=VALUE" in line, line
    assert not (tmp_path / "lock.json").exists()


def test_too_many_entries(impl: str, tmp_path: Path, signing_key: tuple[bytes, bytes],
                          capsys: pytest.CaptureFixture[str]) -> None:
    body = USR + b"".join(tar_entry(f"usr/f{i}", data=b"") for i in range(300))
    apk = hostile_apk("many", body, signing_key)
    cfg = hostile_repo(tmp_path, {"many-1.0-r0.apk": apk}, signing_key, ["many"])
    line = refused(capsys, argv(cfg, tmp_path, impl, "--limit", "entries=200"))
    assert "many-1.0-r0.apk" in line and "number of tar entries exceeds the entries limit " \
        "(200); raise it with --limit entries=VALUE" in line, line
    from builder.cli import main

    assert main(argv(cfg, tmp_path, impl, "--limit", "entries=400")) == 0
    assert "usr/f299" in layout_tree(tmp_path / "out")
