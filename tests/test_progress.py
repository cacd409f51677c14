"""The status line: drawn in place on a terminal (a real pseudo-terminal for a real build),
absent when stderr is piped."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys
from pathlib import Path

from builder.progress import Progress
from tests.helpers import golden_workdir


def test_line_counts_packages_and_bytes() -> None:
    out = io.StringIO()
    p = Progress(out)
    p.start("fetch", "x86_64")
    p.expect(4, 1000)
    p.package_done(500)
    p.downloaded(2_500_000)
    assert p.line().startswith("fetch x86_64  [##########..........] 1/4 packages, "
                               "2.5 MB downloaded  ")
    p.end()
    p.close()
    text = out.getvalue()
    assert text.startswith("\r\x1b[Kfetch x86_64")
    assert text.endswith("\r\x1b[K")  # the line is gone when the stage ends


def _build(tmp_path: Path, stderr: int) -> tuple[int, bytes]:
    wd = golden_workdir(tmp_path)
    argv = [sys.executable, "-m", "builder.cli", "build", "testdata/apko.yaml", "t:1",
            str(tmp_path / f"out{stderr}"), "--arch", "x86_64", "--impl", "fast",
            "--cache-dir", str(tmp_path / "cache")]
    if stderr == subprocess.PIPE:
        done = subprocess.run(argv, cwd=wd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                              timeout=120)
        return done.returncode, done.stderr
    proc = subprocess.Popen(argv, cwd=wd, stderr=stderr, stdout=subprocess.DEVNULL)
    return proc.wait(timeout=120), b""


def test_a_terminal_gets_the_status_line_a_pipe_does_not(tmp_path: Path) -> None:
    main_fd, tty_fd = pty.openpty()
    try:
        rc, _ = _build(tmp_path, tty_fd)
        os.close(tty_fd)
        seen = b""
        while True:
            try:
                chunk = os.read(main_fd, 65536)
            except OSError:  # the terminal's other end is closed: all read
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(main_fd)
    assert rc == 0, seen
    assert b"\r\x1b[Kfetch x86_64" in seen and b"packages" in seen, seen
    assert b"INFO fetch (x86_64)" in seen  # the per-stage lines follow the status line
    rc, piped = _build(tmp_path, subprocess.PIPE)
    assert rc == 0 and b"\x1b" not in piped and b"\r" not in piped, piped
