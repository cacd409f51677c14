"""Hostile image configs: every one ends in a one-line ConfigError naming the file, the line
and the key (the CLI prints it as one `apkimage: error:` line and exits 1), in bounded time and
memory — unknown keys at every level, a wrong type for every kind of field in the schema, ids
out of range, `paths` that climb out of the root (lexically, or through symlinks when applied),
anchor bombs, recursive aliases, deep nesting, huge and non-UTF-8 files, include chains."""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import pytest

from builder import config as config_module
from builder.cli import main
from builder.config import (
    MAX_ALIAS_NODES,
    MAX_CONFIG_BYTES,
    MAX_DEPTH,
    MAX_INCLUDE_DEPTH,
    SCHEMA,
    load_config,
)
from builder.errors import ConfigError
from tests.helpers import GOLDEN


def refused(path: Path, workdir: Path | None = None, at: Path | None = None) -> str:
    """The one-line ConfigError loading `path` gives (it must give one), naming the file at
    fault first: `path`, or `at` (an included file)."""
    with pytest.raises(ConfigError) as err:
        load_config(path, workdir)
    message = str(err.value)
    assert "\n" not in message and len(message) < 400, message
    assert message.startswith(f"{at or path}"), message
    return message


def write(tmp_path: Path, text: str | bytes, name: str = "apko.yaml") -> Path:
    p = tmp_path / name
    p.write_bytes(text.encode() if isinstance(text, str) else text)
    return p


# ------------------------------------------------------------------------- unknown keys, types

@pytest.mark.parametrize(("text", "where"), [
    ("contents: {}\nentrypont: {}\n", ":2: entrypont: unknown key"),
    ("contents:\n  packages: [a]\n  pacakges: [b]\n", ":3: contents.pacakges: unknown key"),
    ("entrypoint:\n  command: x\n  shell_fragment: y\n", ":3: entrypoint.shell_fragment"),
    ("accounts:\n  users:\n    - username: a\n      uid: 5\n      shel: /bin/sh\n",
     ":5: accounts.users[0].shel: unknown key"),
    ("accounts:\n  groups:\n    - {groupname: g, gid: 5, member: [a]}\n",
     ":3: accounts.groups[0].member: unknown key"),
    ("paths:\n  - path: /x\n    type: directory\n    mode: 0755\n",
     ":4: paths[0].mode: unknown key"),
    ("layering: {strategy: origin, budgett: 2}\n", ":1: layering.budgett: unknown key"),
    ("<<: {cmd: x, bogus: y}\n", ":1: bogus: unknown key"),  # a merged mapping's keys too
])
def test_unknown_keys_at_every_level(tmp_path: Path, text: str, where: str) -> None:
    p = write(tmp_path, text)
    assert f"{p}{where}" in refused(p)


def _kinds(schema: dict, prefix: str = "") -> list[tuple[str, object]]:
    """Every (key, kind) of the schema, nested objects and list items included."""
    out = []
    for key, kind in schema.items():
        full = f"{prefix}{key}"
        out.append((full, kind))
        if isinstance(kind, dict):
            out += _kinds(kind, full + ".")
        elif isinstance(kind, tuple) and isinstance(kind[1], dict):
            out += _kinds(kind[1], full + "[0].")
    return out


_WRONG = {  # for each kind of field: values of other kinds, and the error it gives
    "str": [("[a]", "expected a string"), ("{a: b}", "expected a string")],
    "int": [("abc", "expected an integer, got 'abc'"), ("1.5", "expected an integer"),
            ("true", "expected an integer"), ("[1]", "expected an integer"),
            ("-1", "out of range: -1"), ("4294967296", "out of range: 4294967296"),
            ("9" * 5000, "expected an integer, got '9999")],
    "bool": [("maybe", "expected true or false, got 'maybe'"), ("!!bool maybe", "'maybe'"),
             ("2", "expected true or false"), ("{a: 1}", "expected true or false")],
    "list": [("a", "expected a list"), ("{a: b}", "expected a list")],
    "map": [("a", "expected a mapping"), ("[a, b]", "expected a mapping")],
    "object": [("a", "expected a mapping"), ("[a]", "expected a mapping")],
}


def _kind_name(kind: object) -> str:
    if isinstance(kind, dict):
        return "object"
    if isinstance(kind, tuple):
        return kind[0]
    return str(kind)


def _nest(key: str, value: str) -> str:
    """YAML setting the dotted `key` (with `[0]` list steps) to `value`; list items get the
    fields their schema requires, so the wrong value is the first thing found wrong."""
    parts = key.replace("[0]", ".[0]").split(".")
    lines, indent = [], ""
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "[0]":
            continue
        item = i + 1 < len(parts) and parts[i + 1] == "[0]"
        if part and i and parts[i - 1] == "[0]":
            lines.append(f"{indent[:-2]}- {part}: {value if last else ''}".rstrip())
        else:
            lines.append(f"{indent}{part}: {value if last else ''}".rstrip())
        indent += "  " * (2 if item else 1)
    return "\n".join(lines) + "\n"


_FIELDS = [(key, _kind_name(kind), value, error) for key, kind in _kinds(SCHEMA)
           for value, error in _WRONG[_kind_name(kind)]]


@pytest.mark.parametrize(("key", "kind", "value", "error"), _FIELDS,
                         ids=[f"{k}={v[:12]}" for k, _, v, _ in _FIELDS])
def test_wrong_type_for_every_field(tmp_path: Path, key: str, kind: str, value: str,
                                    error: str) -> None:
    text = _nest(key, value)
    p = write(tmp_path, text)
    line = text.count("\n")  # the value is on the last line
    message = refused(p)
    assert f"{p}:{line}: {key}: " in message, (text, message)
    assert error in message, (text, message)


@pytest.mark.parametrize(("field", "value", "error"), [
    ("uid", "-5", "out of range: -5"),
    ("uid", "0x100000000", "out of range: 4294967296"),
    ("uid", "'12a'", "expected an integer, got '12a'"),
    ("uid", "1e3", "expected an integer, got '1e3'"),
    ("gid", "-0o1", "out of range: -1"),
    ("gid", "99999999999999999999999999", "expected an integer"),
    ("uid", "0", "has UID 0"),
])
def test_bad_user_ids(tmp_path: Path, field: str, value: str, error: str) -> None:
    ids = f"uid: {value}\n" if field == "uid" else f"uid: 10\n      gid: {value}\n"
    p = write(tmp_path, f"accounts:\n  users:\n    - username: nginx\n      {ids}")
    message = refused(p)
    assert f":{4 if field == 'uid' else 5}: accounts.users[0].{field}: " in message, message
    assert error in message


@pytest.mark.parametrize("key", ["accounts.groups[0].gid", "paths[0].uid", "paths[0].gid"])
@pytest.mark.parametrize(("value", "error"), [("-1", "out of range"), ("2.0", "an integer"),
                                              ("4294967296", "out of range")])
def test_bad_group_and_path_ids(tmp_path: Path, key: str, value: str, error: str) -> None:
    item = ("accounts:\n  groups:\n    - groupname: g\n      gid: {v}\n" if "groups" in key
            else "paths:\n  - path: /x\n    type: directory\n    {f}: {v}\n")
    p = write(tmp_path, item.format(v=value, f=key.rsplit(".", 1)[1]))
    message = refused(p)
    assert f":4: {key}: " in message and error in message, message


def test_ids_apko_accepts(tmp_path: Path) -> None:
    """apko's ids are uint32: the whole range, in Go's spellings."""
    p = write(tmp_path, "accounts:\n  users:\n    - {username: a, uid: 4294967295, gid: 0}\n"
                        "  groups:\n    - {groupname: g, gid: 0o777}\n"
                        "paths:\n  - {path: /x, type: directory, uid: 0x10, gid: 0b11,"
                        " permissions: 0755}\n")
    cfg = load_config(p)
    assert (cfg.accounts.users[0].uid, cfg.accounts.users[0].gid) == (4294967295, 0)
    assert cfg.accounts.groups[0].gid == 0o777
    assert (cfg.paths[0].uid, cfg.paths[0].gid, cfg.paths[0].permissions) == (16, 3, 0o755)


# ------------------------------------------------------------------------ paths out of the root

@pytest.mark.parametrize(("entry", "key"), [
    ("{path: ../etc, type: directory}", "paths[1].path"),
    ("{path: /../etc/passwd, type: empty-file}", "paths[1].path"),
    ("{path: usr/../../x, type: permissions}", "paths[1].path"),
    ("{path: /x, type: hardlink, source: ../../etc/shadow}", "paths[1].source"),
    ("{path: \"/x\\0y\", type: directory}", "paths[1].path"),
])
def test_paths_climbing_out_of_the_root(tmp_path: Path, entry: str, key: str) -> None:
    p = write(tmp_path, f"paths:\n  - {{path: /ok, type: directory}}\n  - {entry}\n")
    message = refused(p)
    assert f"{p}:3: {key}: " in message, message


def test_paths_that_stay_inside_are_apkos(tmp_path: Path) -> None:
    """`..` that stays below the root is fine, and a symlink's source is its target text,
    anything at all (apko writes it as given; it is resolved inside the root when used)."""
    p = write(tmp_path, "paths:\n  - {path: /usr/lib/../bin, type: directory}\n"
                        "  - {path: /up, type: symlink, source: ../../../../..}\n")
    assert [m.path for m in load_config(p).paths] == ["/usr/lib/../bin", "/up"]


def _escape_config(wd: Path, paths: str) -> Path:
    return write(wd, "contents:\n  keyring: [./testdata/melange.rsa.pub]\n"
                     "  repositories: [./testdata/packages]\n  packages: [replayout]\n"
                     f"archs: [x86_64]\npaths:\n{paths}")


def _host_tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("impl", ["reference", "fast"])
def test_paths_through_symlinks_stay_in_the_image(tmp_path: Path, impl: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Symlinks made by `paths` are followed as a chroot follows them: an absolute target is
    the image's, and a `..` past the image root is an error naming the file:line and the
    entry. Nothing is written outside the image, on disk (reference) or in memory (fast)."""
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "testdata").symlink_to(GOLDEN)
    host = tmp_path / "host"
    host.mkdir()
    before = _host_tree(tmp_path)
    cache, out = tmp_path / "cache", tmp_path / "out"
    argv = ["build", "", "t:1", str(out), "--workdir", str(wd), "--cache-dir", str(cache),
            "--impl", impl]

    # an absolute target is inside the image: this makes image/<host>/made, not <host>/made
    ok = _escape_config(wd, f"  - {{path: /abs, type: symlink, source: {host}}}\n"
                            f"  - {{path: {host}, type: directory}}\n"
                            "  - {path: /abs/made, type: empty-file}\n"
                            "  - {path: /abs/madedir, type: directory}\n")
    argv[1] = str(ok)
    assert main(argv) == 0, capsys.readouterr().err
    assert not (host / "made").exists() and not (host / "madedir").exists()

    for i, text in enumerate([
            "  - {path: /up, type: symlink, source: ../../../../../../..}\n"
            "  - {path: /up/pwned, type: empty-file}\n",
            "  - {path: /up, type: symlink, source: ../../../../../../..}\n"
            "  - {path: /up/tmp/pwned, type: directory}\n",
            "  - {path: /etc/up, type: symlink, source: ../..}\n"
            "  - {path: /etc/up/x, type: permissions}\n"]):
        bad = _escape_config(wd, text)
        argv[1] = str(bad)
        bad_out = tmp_path / f"bad-{i}"
        argv[3] = str(bad_out)
        capsys.readouterr()
        assert main(argv) == 1
        lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("apkimage: error: "), lines
        assert f"{bad}:8: paths[1]" in lines[0], lines[0]
        assert not bad_out.exists()
    after = set(_host_tree(tmp_path)) - set(before)
    escaped = [p for p in after
               if p.split("/")[0] not in ("out", "cache", "wd") and not p.startswith("bad-")]
    assert escaped == [], escaped


# ----------------------------------------------------------------- anchors, nesting, file size

def _bomb(levels: int, fanout: int = 10) -> str:
    """"Billion laughs": each anchored list holds `fanout` aliases of the one before."""
    items = ["&v0 [" + ", ".join(["lol"] * fanout) + "]"]
    items += [f"&v{i} [" + ", ".join([f"*v{i - 1}"] * fanout) + "]"
              for i in range(1, levels + 1)]
    return "contents:\n  packages:\n" + "".join(f"    - {item}\n" for item in items)


@pytest.mark.parametrize("levels", [5, 9])  # 10**5 and 10**9 nodes if expanded
def test_anchor_bomb_is_refused_before_it_expands(tmp_path: Path, levels: int) -> None:
    p = write(tmp_path, _bomb(levels))
    assert p.stat().st_size < 2000
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    message = refused(p)
    assert time.monotonic() - start < 2
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 50 * 1024  # KiB
    assert f"aliases stand for more than {MAX_ALIAS_NODES} nodes" in message
    assert f"{p}:" in message and ": alias *v" in message


def test_moderate_aliases_are_accepted(tmp_path: Path) -> None:
    """apko's YAML (yaml.v3) takes anchors, aliases and merge keys: so does the loader, up
    to the limit."""
    p = write(tmp_path, "contents:\n  repositories: &repos [a, b]\n"
                        "  build_repositories: *repos\n"
                        "environment: &env {A: '1', B: '2'}\n"
                        "annotations:\n  <<: *env\n  B: three\n"
                        "entrypoint:\n  <<: [{command: first}, {command: second, type: ''}]\n")
    cfg = load_config(p)
    assert cfg.contents.build_repositories == ["a", "b"]
    assert cfg.annotations == {"A": "1", "B": "three"}
    assert cfg.entrypoint.command == "first"


@pytest.mark.parametrize(("text", "line"), [
    ("contents:\n  packages: &a [x, *a]\n", 2),
    ("contents: &c\n  keyring: [*c]\n", 2),
    ("accounts:\n  users:\n    - &u {username: a, uid: 5, shell: *u}\n", 3),
    ("entrypoint: &e\n  <<: *e\n", 2),
])
def test_recursive_alias(tmp_path: Path, text: str, line: int) -> None:
    p = write(tmp_path, text)
    message = refused(p)
    assert f"{p}:{line}: alias *" in message and "recursive alias" in message


@pytest.mark.parametrize("flow", [True, False])
@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 100_000])
def test_deep_nesting(tmp_path: Path, depth: int, flow: bool) -> None:
    if flow:
        text = "contents:\n  packages: " + "[" * depth + "]" * depth + "\n"
    else:
        text = "".join("  " * i + "-\n" for i in range(min(depth, 500)))
    p = write(tmp_path, text)
    message = refused(p)
    assert f"nested more than {MAX_DEPTH} levels deep" in message
    assert f"{p}:{2 if flow else MAX_DEPTH + 1}: " in message


def test_nesting_within_the_limit_is_a_type_error(tmp_path: Path) -> None:
    p = write(tmp_path, "contents:\n  packages: [[[[x]]]]\n")
    assert ":2: contents.packages[0]: expected a string" in refused(p)


def test_huge_file(tmp_path: Path) -> None:
    """Refused from its size, before any of it is parsed (a valid config, only too big)."""
    p = write(tmp_path, "contents:\n  packages:\n" + "    - pkg\n" * (MAX_CONFIG_BYTES // 10))
    start = time.monotonic()
    message = refused(p)
    assert time.monotonic() - start < 1
    assert f"larger than {MAX_CONFIG_BYTES >> 20} MiB" in message
    just_under = write(tmp_path, "contents:\n  packages:\n" + "    - p\n" * 10_000, "ok.yaml")
    assert len(load_config(just_under).contents.packages) == 10_000


def test_a_device_or_fifo_is_not_read(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    assert "not a regular file" in refused(fifo)
    p = write(tmp_path, "include: /dev/zero\n")
    assert "cannot read config: not a regular file" in refused(p, tmp_path, Path("/dev/zero"))


@pytest.mark.parametrize(("raw", "where"), [
    (b"cmd: ok\nwork-dir: \xff\xfe\n", ":2: not UTF-8 (byte 0xff at offset 18)"),
    (b"cmd: \x00\n", ":1: invalid YAML: unacceptable character #x0000"),
    (b"cmd: [unclosed\n", ":2: invalid YAML:"),
    (b"cmd: a\n---\ncmd: b\n", ":2: invalid YAML: but found another document"),
    (b"? [a]\n: b\n", ":1: config: mapping keys must be strings"),
    (b"- a\n", ":1: config: expected a mapping"),
    (b"x" * 5000 + b": 1\n", ":1: invalid YAML"),
])
def test_not_yaml(tmp_path: Path, raw: bytes, where: str) -> None:
    p = write(tmp_path, raw)
    assert f"{p}{where}" in refused(p)


def test_utf8_bom_is_read(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "\ufeffcmd: x\n")).cmd == "x"


def test_long_values_are_cut_in_messages(tmp_path: Path) -> None:
    p = write(tmp_path, "paths:\n  - {path: /x, type: " + "y" * 10_000 + "}\n")
    message = refused(p)
    assert ":2: paths[0].type: unknown path mutation type 'yyyy" in message
    assert len(message) < 300


def test_include_chain_depth(tmp_path: Path) -> None:
    for i in range(MAX_INCLUDE_DEPTH + 1):
        write(tmp_path, f"include: c{i + 1}.yaml\n" if i < MAX_INCLUDE_DEPTH else "cmd: x\n",
              f"c{i}.yaml")
    message = refused(tmp_path / "c0.yaml", tmp_path, tmp_path / f"c{MAX_INCLUDE_DEPTH - 1}.yaml")
    assert f":1: include: includes nest more than {MAX_INCLUDE_DEPTH} files deep" in message
    assert load_config(tmp_path / "c1.yaml", tmp_path).cmd == "x"


def test_errors_in_an_include_name_the_included_file(tmp_path: Path) -> None:
    write(tmp_path, "cmd: x\npaths:\n  - {path: /a/../.., type: directory}\n", "base.yaml")
    p = write(tmp_path, "include: base.yaml\n")
    with pytest.raises(ConfigError, match=rf"^{tmp_path / 'base.yaml'}:3: paths\[0\]\.path"):
        load_config(p, tmp_path)


def test_cli_prints_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = write(tmp_path, _bomb(9))
    assert main(["show-config", str(p)]) == 1
    captured = capsys.readouterr()
    lines = [ln for ln in captured.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"apkimage: error: {p}:"), captured.err
    assert captured.out == ""


def test_limits_are_the_documented_ones() -> None:
    """README "Config limits" names these values."""
    readme = (Path(config_module.__file__).parents[1] / "README.md").read_text()
    for name, value in (("MAX_CONFIG_BYTES", "1 MiB"), ("MAX_DEPTH", str(MAX_DEPTH)),
                        ("MAX_ALIAS_NODES", f"{MAX_ALIAS_NODES:,}"),
                        ("MAX_INCLUDE_DEPTH", str(MAX_INCLUDE_DEPTH))):
        assert f"`{name}` ({value}" in readme, name
