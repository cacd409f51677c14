"""Config loading: schema, file:line errors, include merge, overrides, apko.json form."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.config import (
    apply_overrides,
    build_repositories,
    load_config,
    locked_json,
    parse_archs,
    runtime_repositories,
)
from builder.errors import ConfigError
from builder.gojson import dumps_encoder
from tests.helpers import GOLDEN


def write(tmp_path: Path, text: str, name: str = "apko.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_golden_config_and_apko_json() -> None:
    cfg = load_config(GOLDEN / "apko.yaml")
    assert cfg.contents.repositories == ["./testdata/packages"]
    assert cfg.archs == ["amd64", "arm64"]
    apply_overrides(cfg, annotations=["org.opencontainers.image.title:Title",
                                      "org.opencontainers.image.vendor:Vendor"])
    doc = dumps_encoder(locked_json(cfg, "x86_64", ["pretend-baselayout=1.0.0-r0",
                                                    "replayout=1.0.0-r0"]))
    assert doc == (
        b'{"contents":{"repositories":["./testdata/packages"],"keyring":'
        b'["./testdata/melange.rsa.pub"],"packages":["pretend-baselayout=1.0.0-r0",'
        b'"replayout=1.0.0-r0"]},"entrypoint":{"command":"/bin/sh -l"},"accounts":{},'
        b'"archs":["amd64"],"annotations":{"org.opencontainers.image.title":"Title",'
        b'"org.opencontainers.image.vendor":"Vendor"}}\n'
    )


def test_unknown_key_names_file_line_and_key(tmp_path: Path) -> None:
    p = write(tmp_path, "contents:\n  packages: [a]\n  pacakges: [b]\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert f"{p}:3: contents.pacakges: unknown key" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("text,needle", [
    ("contents:\n  packages: busybox\n", ":2: contents.packages: expected a list"),
    ("accounts:\n  users:\n    - username: a\n      uid: abc\n", "uid: expected an integer"),
    ("paths:\n  - path: /x\n    type: bogus\n", "unknown path mutation type"),
    ("archs: [sparc]\n", "unknown architecture 'sparc'"),
    ("entrypoint: [a]\n", ":1: entrypoint: expected a mapping"),
    ("cmd: a\ncmd: b\n", ":2: cmd: duplicate key"),
    ("contents: [\n", "invalid YAML"),
    ("accounts:\n  users:\n    - username: a\n", "UID 0"),
])
def test_bad_configs(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=None) as e:
        load_config(write(tmp_path, text))
    assert needle in str(e.value)


def test_types_and_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, """
contents:
  repositories: [https://example.com/os/]
  runtime_repositories: [https://r.example.com/]
  build_repositories: [/b]
  keyring: [k.rsa.pub]
  packages: [busybox, "curl>=7"]
entrypoint:
  shell-fragment: echo hi
cmd: --help
work-dir: /w
stop-signal: SIGTERM
accounts:
  groups: [{groupname: g, gid: 10, members: [u]}]
  users: [{username: u, uid: 10}]
  run-as: u
environment: {B: "2", A: "1"}
paths:
  - {path: /d, type: directory, permissions: 0o750, uid: 10, gid: 10, recursive: true}
  - {path: /e, type: empty-file, permissions: 0644}
archs: [x86_64, arm64, amd64]
annotations: {k: v}
volumes: [/data]
vcs-url: https://git.example.com/x@abc
"""), workdir=tmp_path)
    assert cfg.contents.repositories == ["https://example.com/os"]
    assert cfg.paths[0].permissions == 0o750 and cfg.paths[0].recursive
    assert cfg.paths[1].permissions == 0o644
    assert cfg.accounts.users[0].homedir == "/home/u"
    assert cfg.accounts.users[0].gid is None
    assert build_repositories(cfg) == ["/b", "https://example.com/os"]
    assert runtime_repositories(cfg) == ["https://example.com/os", "https://r.example.com"]
    apply_overrides(cfg)
    assert cfg.archs == ["amd64", "arm64"]
    assert cfg.resolve_local("k.rsa.pub") == str(tmp_path / "k.rsa.pub")
    out = dumps_encoder(locked_json(cfg, "arm64", ["busybox=1"])).decode()
    assert '"environment":{"A":"1","B":"2"}' in out
    assert '"accounts":{"run-as":"u","users":[{"username":"u","uid":10,"homedir":"/home/u"}]' \
        in out
    assert '"archs":["arm64"]' in out


def test_include_merge(tmp_path: Path) -> None:
    write(tmp_path, """
contents: {repositories: [/base], packages: [a], keyring: [base.pub]}
cmd: base-cmd
environment: {X: base, Y: base}
annotations: {a: base}
paths: [{path: /p1, type: directory}]
""", "base.yaml")
    p = write(tmp_path, """
include: base.yaml
contents: {repositories: [/top], packages: [b]}
environment: {X: top}
annotations: {a: top, b: top}
""")
    cfg = load_config(p, workdir=tmp_path)
    assert cfg.contents.packages == ["a", "b"]
    assert cfg.contents.repositories == ["/base", "/top"]
    assert cfg.contents.keyring == ["base.pub"]
    assert cfg.cmd == "base-cmd"
    assert cfg.environment == {"X": "top", "Y": "base"}
    assert cfg.annotations == {"a": "top", "b": "top"}
    assert [x.path for x in cfg.paths] == ["/p1"]


def test_include_missing_and_cycle(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="include: file not found"):
        load_config(write(tmp_path, "include: nope.yaml\n"), workdir=tmp_path)
    write(tmp_path, "include: b.yaml\n", "a.yaml")
    write(tmp_path, "include: a.yaml\n", "b.yaml")
    with pytest.raises(ConfigError, match="include cycle"):
        load_config(tmp_path / "a.yaml", workdir=tmp_path)


def test_overrides_and_workdir(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "contents: {packages: [a]}\n"), workdir="/elsewhere")
    apply_overrides(cfg, archs=["aarch64,x86_64"], keyring_append=["k"],
                    repository_append=["/r/"], package_append=["b"],
                    annotations=["x:y:z"])
    assert cfg.archs == ["amd64", "arm64"]
    assert cfg.contents.repositories == ["/r"]
    assert cfg.contents.packages == ["a", "b"]
    assert cfg.annotations == {"x": "y:z"}
    assert cfg.resolve_local("./k") == "/elsewhere/k"
    with pytest.raises(ConfigError, match="--annotations"):
        apply_overrides(cfg, annotations=["novalue"])
    assert parse_archs(["all"])[0] == "386"
