"""apko's global flags: `--version` / `version`, `--log-level` (one configured logger:
timestamps and levels on stderr; quiet when piped unless asked)."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys

import pytest

from builder.cli import main
from builder.logs import configure, parse_level


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "builder.cli", *args], capture_output=True,
                          text=True, timeout=60)


def test_version_flag_and_command():
    flag = _run("--version")
    assert flag.returncode == 0 and re.fullmatch(r"apkimage \d+\.\d+\.\d+\n", flag.stdout)
    assert main(["version"]) == 0
    cmd = _run("version", "--json")
    assert json.loads(cmd.stdout)["version"] == flag.stdout.split()[1]


def test_a_bad_log_level_is_a_usage_error():
    proc = _run("--log-level", "loud", "version")
    assert proc.returncode == 2
    assert "--log-level: 'loud' is not one of debug, info, warn, error" in proc.stderr
    assert parse_level("WARN") == logging.WARNING


@pytest.mark.parametrize("level, shown", [
    (None, ["WARN", "ERRO"]), ("debug", ["DEBU", "INFO", "WARN", "ERRO"]),
    ("error", ["ERRO"])])
def test_levels_and_format_on_stderr(level, shown, capsys):
    configure(level)  # stderr is not a terminal here: warnings and errors by default
    log = logging.getLogger("builder.test")
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    err = capsys.readouterr().err
    got = re.findall(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d (\w+) [diwe]$", err, re.M)
    assert got == shown
    configure(None)


def test_global_workdir_changes_directory_before_the_command(tmp_path):
    (tmp_path / "sub").mkdir()
    proc = _run("-C", str(tmp_path / "sub"), "lock", "missing.yaml")
    assert proc.returncode == 1
    assert str(tmp_path / "sub" / "missing.yaml") in proc.stderr
    bad = _run("-C", str(tmp_path / "nope"), "version")
    assert bad.returncode == 1 and f"failed to change dir to {tmp_path / 'nope'}" in bad.stderr


def test_only_the_chosen_command_is_loaded_and_the_list_matches_the_modules():
    import argparse
    import importlib

    from builder.cli import COMMANDS, HELPS

    probe = ("import sys; from builder.cli import build_parser; build_parser(['build', 'x']);"
             "print(sorted(m for m in sys.modules if m.startswith('builder.commands.')))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True).stdout
    assert "builder.commands.build'" in loaded and "builder.commands.dot" not in loaded
    for name in COMMANDS:  # the listed help is the command's own
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(f"builder.commands.{name.replace('-', '_')}").add_parser(sub)
        (action,) = [a for a in sub._choices_actions if a.dest == name]
        assert action.help == HELPS[name], name


def test_info_shows_a_line_per_stage_and_the_default_when_piped_shows_none(tmp_path,
                                                                           monkeypatch, capsys):
    from tests.helpers import golden_workdir

    monkeypatch.chdir(golden_workdir(tmp_path))
    args = ["build", "testdata/apko.yaml", "g:latest", str(tmp_path / "o1"), "--arch", "x86_64",
            "--cache-dir", str(tmp_path / "cache")]
    assert main(["--log-level", "info", *args]) == 0
    err = capsys.readouterr().err
    assert re.search(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d INFO layer \(x86_64\) \d+\.\d{3} s "
                     r"\d+\.\d (kB|MB)$", err, re.M), err
    assert re.search(r"INFO building testdata/apko.yaml$", err, re.M)
    args[3] = str(tmp_path / "o2")
    assert main(args) == 0
    assert capsys.readouterr().err == ""
    configure(None)
