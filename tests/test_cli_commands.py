"""apko's everyday commands: show-config, show-packages (with apko's --format), build-minirootfs
and clean, on apko's golden fixture as apko's tests lay it out."""

from __future__ import annotations

import gzip
import hashlib
import json
import tarfile

import pytest

from builder.cli import main
from builder.commands.show_packages import compile_format
from builder.errors import ConfigError
from tests.helpers import GOLDEN_ANNOTATION_ARGS, GOLDEN_DIFF_IDS, golden_workdir


@pytest.fixture
def wd(tmp_path, monkeypatch):
    monkeypatch.chdir(golden_workdir(tmp_path))
    return tmp_path


def test_show_config_prints_the_loaded_config_in_apkos_yaml(wd, capsys):
    assert main(["show-config", "testdata/apko.yaml"]) == 0
    assert capsys.readouterr().out == (
        "contents:\n    repositories:\n        - ./testdata/packages\n    keyring:\n"
        "        - ./testdata/melange.rsa.pub\n    packages:\n        - replayout\n"
        "entrypoint:\n    command: /bin/sh -l\naccounts: {}\narchs:\n    - amd64\n"
        "    - arm64\n")


def test_show_packages_formats(wd, capsys):
    cache = str(wd / "cache")
    assert main(["show-packages", "testdata/apko.yaml", "--cache-dir", cache]) == 0
    assert capsys.readouterr().out == ("pretend-baselayout 1.0.0-r0\nreplayout 1.0.0-r0\n" * 2)
    assert main(["show-packages", "testdata/apko.yaml", "--arch", "x86_64", "--format",
                 "packagelock-source", "--cache-dir", cache]) == 0
    assert capsys.readouterr().out.splitlines()[1] == (
        "- replayout=1.0.0-r0 # ./testdata/packages/x86_64/replayout-1.0.0-r0.apk")
    assert main(["show-packages", "testdata/apko.yaml", "--arch", "x86_64", "--format",
                 "{{.Name}}:{{ .Version }}", "--cache-dir", cache]) == 0
    assert capsys.readouterr().out == "pretend-baselayout:1.0.0-r0\nreplayout:1.0.0-r0\n"
    assert main(["show-packages", "testdata/apko.yaml", "--json", "--arch", "x86_64",
                 "--cache-dir", cache]) == 0
    assert [p["name"] for p in json.loads(capsys.readouterr().out)["x86_64"]] == [
        "pretend-baselayout", "replayout"]
    with pytest.raises(ConfigError, match=r"no field \.Arch"):
        compile_format("{{ .Arch }}")


def test_build_minirootfs_is_the_image_layer(wd):
    out = wd / "rootfs.tar.gz"
    assert main(["build-minirootfs", "testdata/apko.yaml", str(out), "--build-arch",
                 "x86_64", *GOLDEN_ANNOTATION_ARGS, "--cache-dir", str(wd / "cache")]) == 0
    raw = gzip.decompress(out.read_bytes())
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == GOLDEN_DIFF_IDS["amd64"]
    with tarfile.open(out) as tf:
        names = tf.getnames()
    assert "etc/apko.json" in names and "usr/lib/apk/db/installed" in names
    assert not [p for p in wd.iterdir() if p.name.startswith(".rootfs.tar.gz")]


def test_clean_measures_then_removes(wd, capsys):
    cache = wd / "cache"
    assert main(["show-packages", "testdata/apko.yaml", "--cache-dir", str(cache)]) == 0
    capsys.readouterr()
    assert main(["clean", "--cache-dir", str(cache), "--dry-run", "--json"]) == 0
    dry = json.loads(capsys.readouterr().out)
    assert dry["bytes"] > 0 and dry["removed"] is False and cache.is_dir()
    assert main(["clean", "--cache-dir", str(cache)]) == 0
    assert "removed" in capsys.readouterr().out and not cache.exists()
    assert main(["clean", "--cache-dir", str(cache)]) == 0
    assert "nothing to clean" in capsys.readouterr().out


def test_dot_draws_apkos_graph(wd, capsys):
    assert main(["dot", "testdata/apko.yaml", "--cache-dir", str(wd / "cache")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("digraph images {\ngraph [\n  rankdir=LR;\n];\n")
    assert out.endswith("}\n\n")
    lines = out.splitlines()
    assert '"testdata/apko.yaml" -> replayout' in lines
    assert 'replayout [label="replayout-1.0.0-r0", tooltip="replacement baselayout"];' in lines


def test_dot_constraints_provides_and_spanning_tree():
    from types import SimpleNamespace

    from builder.commands.dot import draw, quote

    def pkg(name, depends=(), provides=()):
        return SimpleNamespace(name=name, version="1-r0", description="d",
                               depends=list(depends), provides=list(provides))

    pkgs = [pkg("libc", provides=["so:libc.so=1"]), pkg("a", ["so:libc.so", "libc"]),
            pkg("b", ["libc"])]
    full = draw("c.yaml", ["a=1-r0"], pkgs, spanning=False).render().splitlines()
    assert '"a=1-r0" -> a' in full and "a -> libc" in full and "b -> libc" in full
    assert '"so:libc.so" [shape=rect];' in full and '"so:libc.so" -> libc' in full
    tree = draw("c.yaml", ["a"], pkgs, spanning=True).render().splitlines()
    assert "a -> libc" in tree and "b -> libc" not in tree
    assert quote("cmd:sh") == "cmd:sh" and quote("a-b") == '"a-b"' and quote("node") == "node"


@pytest.mark.tools
def test_graphviz_parses_the_dot_output(wd, capsys):
    import subprocess

    from tests.helpers import require_tool

    require_tool("dot")
    assert main(["dot", "testdata/apko.yaml", "--cache-dir", str(wd / "cache")]) == 0
    proc = subprocess.run(["dot", "-Tsvg"], input=capsys.readouterr().out, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "<svg" in proc.stdout and "replayout&#45;1.0.0&#45;r0" in proc.stdout


def test_show_packages_equals_resolve(wd, capsys):
    cache = str(wd / "cache")
    assert main(["resolve", "testdata/apko.yaml", "--json", "--cache-dir", cache]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert main(["show-packages", "testdata/apko.yaml", "--json", "--cache-dir", cache]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert {a: [f"{p['name']}={p['version']}" for p in rows] for a, rows in shown.items()} \
        == resolved


@pytest.mark.tools
def test_dot_web_serves_linked_svg(wd):
    """`dot --web` as a user runs it: a server on 127.0.0.1 whose page is Graphviz's SVG with
    package nodes linking to the registry explorer; `?node=` of an unknown package is a 404."""
    import os
    import subprocess
    import sys
    import urllib.error
    import urllib.request
    import xml.etree.ElementTree as ET

    from tests.helpers import require_tool

    require_tool("dot")
    env = {**os.environ, "BROWSER": "true"}  # webbrowser runs `true` instead of a browser
    proc = subprocess.Popen(
        [sys.executable, "-m", "builder.cli", "dot", "--web", "testdata/apko.yaml",
         "--arch", "x86_64", "-e", "explorer.example", "--cache-dir", str(wd / "cache")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://localhost:"), proc.stderr.read() if proc.stderr else ""
        with urllib.request.urlopen(url + "/?node=replayout", timeout=30) as resp:
            assert resp.headers["Content-Type"] == "image/svg+xml"
            root = ET.fromstring(resp.read())
        links = {a.get("{http://www.w3.org/1999/xlink}href")
                 for a in root.iter("{http://www.w3.org/2000/svg}a")}
        assert any(link and link.startswith("https://explorer.example/")
                   and link.endswith("/x86_64/replayout-1.0.0-r0.apk") for link in links), links
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(url + "/?node=no-such-package", timeout=30)
        assert err.value.code == 404
    finally:
        proc.terminate()
        proc.wait(timeout=30)
