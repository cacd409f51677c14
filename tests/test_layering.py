"""apko's `layering: {strategy: origin, budget: N}` (builder/layering.py): the groups apko's own
unit test expects, the directory-stack rule and the partial installed db per layer, and real
layered builds — reference and fast give the same layer tars, and the layers unpacked on top
of each other are the single-layer image's tree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.apk.model import Package
from builder.cli import main
from builder.config import load_config
from builder.errors import ConfigError
from builder.fs.kinds import DIR, FILE
from builder.fs.model import Meta
from builder.layering import INSTALLED, LayerGroup, _align, _Open, group_by_origin, split_entries
from tests.helpers import GOLDEN, differences, golden_workdir, require_tool, snapshot, unpack


def _pkg(name: str, origin: str, size: int, version: str = "1-r0",
         replaces: tuple[str, ...] = ()) -> Package:
    return Package(name=name, version=version, origin=origin, installed_size=size,
                   replaces=list(replaces))


def _glibc(libcrypt1_version: str, replaces: str = "libcrypt1<2.38-r15") -> list[Package]:
    """apko's TestGroupByOriginAndSize packages (pkg/build/layers_test.go)."""
    return [_pkg("glibc", "glibc", 6113087), _pkg("glibc-locale-posix", "glibc", 417444),
            _pkg("libcrypt1", "glibc", 23508, version=libcrypt1_version),
            _pkg("libxcrypt", "libxcrypt", 235761, replaces=(replaces,)),
            _pkg("crane", "crane", 100)]


def test_groups_as_apkos_own_test_expects():
    groups = group_by_origin(_glibc("2.38-r16"), budget=2)
    assert [g.packages for g in groups] == [
        ("glibc", "glibc-locale-posix", "libcrypt1"), ("crane", "libxcrypt")]
    assert groups[0].tiebreaker == "libcrypt1" and groups[1].tiebreaker == "libxcrypt"
    assert groups[1].size == 235761 + 100


def test_a_satisfied_replaces_merges_the_groups():
    groups = group_by_origin(_glibc("2.38-r14"), budget=10)
    assert [g.packages for g in groups] == [
        ("glibc", "glibc-locale-posix", "libcrypt1", "libxcrypt"), ("crane",)]
    unversioned = group_by_origin(_glibc("2.38-r16", replaces="libcrypt1"), budget=10)
    assert unversioned[0].packages == ("glibc", "glibc-locale-posix", "libcrypt1", "libxcrypt")


def test_budget_zero_is_one_package_layer_and_budget_above_the_groups_pads_nothing():
    assert [g.packages for g in group_by_origin(_glibc("2.38-r16"), budget=0)] == [
        ("crane", "glibc", "glibc-locale-posix", "libcrypt1", "libxcrypt")]
    assert len(group_by_origin(_glibc("2.38-r16"), budget=50)) == 3
    assert group_by_origin([], budget=3) == []


def test_equal_sizes_are_ordered_by_the_greatest_name():
    groups = group_by_origin([_pkg("b", "o1", 10), _pkg("a", "o2", 10), _pkg("c", "o3", 11)],
                             budget=5)
    assert [g.packages for g in groups] == [("c",), ("a",), ("b",)]


def test_align_examples():
    a, b, c, d = (_Open(p, Meta(DIR, 0o755)) for p in "abcd")
    mine = [a, b, c]
    assert _align(mine, [a, b, d]) == [d] and mine == [a, b, d]
    assert _align(mine, [a]) == [] and mine == [a]  # longer, agreeing: truncated
    assert _align(mine, [a, b]) == [b]


def _walk() -> list[tuple[str, Meta]]:
    def d(mtime: int) -> Meta:
        return Meta(DIR, 0o755, mtime=mtime)

    def f(pkg: str, mtime: int, size: int = 3) -> Meta:
        return Meta(FILE, 0o644, mtime=mtime, size=size, package=pkg)

    return [("a", d(1)), ("a/b", d(2)), ("a/b/x", f("p", 10)), ("a/c", f("q", 20)),
            ("usr", d(3)), ("usr/lib", d(4)), ("usr/lib/apk", d(5)), ("usr/lib/apk/db", d(6)),
            (INSTALLED, Meta(FILE, 0o644, mtime=30, size=8)), ("z", f("", 40))]


def test_entries_are_split_with_apkos_directory_stack_rule():
    groups = [LayerGroup(("p",), 5), LayerGroup(("q",), 4)]
    p_layer, q_layer, top = split_entries(_walk(), groups, {"p": b"P:p\n\n", "q": b"P:q\n\n"})
    # Every directory is in the top layer with its own mtime, and what no package owns.
    assert [(e.path, e.meta.mtime) for e in top if e.meta.kind == DIR] == [
        ("a", 1), ("a/b", 2), ("usr", 3), ("usr/lib", 4), ("usr/lib/apk", 5),
        ("usr/lib/apk/db", 6)]
    assert [e.path for e in top if e.meta.kind == FILE] == [INSTALLED, "z"]
    # p's ancestors re-emitted with x's mtime.
    assert [(e.path, e.meta.mtime) for e in p_layer[:3]] == [("a", 10), ("a/b", 10),
                                                             ("a/b/x", 10)]
    # The stack is popped only by directories: a/c brings a/b into q's layer too.
    assert [(e.path, e.meta.mtime) for e in q_layer[:3]] == [("a", 20), ("a/b", 20),
                                                             ("a/c", 20)]
    # Each package layer: the db's directories with the db's mtime, then its own records.
    for layer, record in ((p_layer, b"P:p\n\n"), (q_layer, b"P:q\n\n")):
        tail = layer[3:]
        assert [(e.path, e.meta.mtime) for e in tail] == [
            ("usr", 30), ("usr/lib", 30), ("usr/lib/apk", 30), ("usr/lib/apk/db", 30),
            (INSTALLED, 30)]
        assert tail[-1].content == record and tail[-1].meta.size == len(record)


def _layered_config(tmp_path: Path, layering: str) -> Path:
    wd = golden_workdir(tmp_path)
    cfg = wd / "layered.yaml"
    cfg.write_text((GOLDEN / "apko.yaml").read_text() + layering)
    return cfg


def _build(cfg: Path, out: Path, impl: str, cache: Path, *extra: str) -> dict:
    spans = out.with_name(out.name + ".spans.json")
    assert main(["build", str(cfg), "l:latest", str(out), "--impl", impl, "--workdir",
                 str(cfg.parent), "--cache-dir", str(cache), "--spans", str(spans),
                 *extra]) == 0
    return json.loads(spans.read_text())


def test_layering_config_is_checked_as_apko_checks_it(tmp_path):
    cfg = tmp_path / "a.yaml"
    cfg.write_text("contents: {packages: [a]}\nlayering: {strategy: size, budget: 3}\n")
    with pytest.raises(ConfigError, match=r"a.yaml:2: layering.strategy: unrecognized layering "
                                          r"strategy 'size' \(apko knows: origin\)"):
        load_config(cfg)
    cfg.write_text("contents: {packages: [a]}\nlayering: {budget: 3}\n")
    with pytest.raises(ConfigError, match="unrecognized layering strategy ''"):
        load_config(cfg)
    cfg.write_text("contents: {packages: [a]}\nlayering: {stratgy: origin}\n")
    with pytest.raises(ConfigError, match="stratgy"):
        load_config(cfg)


def test_empty_layering_is_one_layer_and_apko_json_says_so(tmp_path, golden_cache):
    cfg = _layered_config(tmp_path, "layering: {}\n")
    doc = _build(cfg, tmp_path / "out", "reference", golden_cache, "--arch", "x86_64")
    assert len(doc["image"]["manifests"]["amd64"]["diff_ids"]) == 1


@pytest.mark.tools
def test_a_layered_workload_unpacks_to_the_single_layer_tree(tmp_path, small_workload):
    """The small workload (48 packages, many origins), budget 5: reference and fast make the
    same 6 layer tars, stitched 6 of its own format (each package layer from its packages'
    own DEFLATE blocks); unpacked, each is the one-layer image's tree (but etc/apko.json,
    which records the layering)."""
    require_tool("umoci")
    base = small_workload.config_path.read_text()
    cfg = tmp_path / "layered.yaml"
    cfg.write_text(base + "layering:\n  strategy: origin\n  budget: 5\n")
    cache = tmp_path / "cache"
    ref = _build(cfg, tmp_path / "ref", "reference", cache)["image"]["manifests"]["amd64"]
    fast = _build(cfg, tmp_path / "fast", "fast", cache)["image"]["manifests"]["amd64"]
    assert len(ref["diff_ids"]) == 6 and ref["diff_ids"] == fast["diff_ids"]
    one = _build(small_workload.config_path, tmp_path / "one", "fast",
                 cache)["image"]["manifests"]["amd64"]
    stitched = _build(cfg, tmp_path / "st", "stitched", cache)["image"]["manifests"]["amd64"]
    assert len(stitched["diff_ids"]) == 6
    single_tree = snapshot(unpack(tmp_path / "one", one["digest"], tmp_path / "u-one"))
    apko_json = json.loads((tmp_path / "u-one" / "rootfs" / "etc/apko.json").read_text())
    assert "layering" not in apko_json
    del single_tree["etc/apko.json"]
    for name, m in (("ref", ref), ("st", stitched)):
        layered_tree = snapshot(unpack(tmp_path / name, m["digest"], tmp_path / f"u-{name}"))
        apko_json = json.loads((tmp_path / f"u-{name}" / "rootfs/etc/apko.json").read_text())
        assert apko_json["layering"] == {"strategy": "origin", "budget": 5}
        del layered_tree["etc/apko.json"]
        assert differences(layered_tree, single_tree) == [], name
    blobs = tmp_path / "ref" / "blobs" / "sha256"
    config = json.loads((blobs / ref["config_digest"][7:]).read_text())
    assert config["rootfs"]["diff_ids"] == ref["diff_ids"]
    assert len(config["history"]) == 6 and "comment" not in config["history"][0]


def test_the_sbom_and_the_summary_list_every_layer(tmp_path, golden_cache):
    cfg = _layered_config(tmp_path, "layering: {strategy: origin, budget: 3}\n")
    sboms = tmp_path / "sboms"
    doc = _build(cfg, tmp_path / "out", "reference", golden_cache, "--arch", "x86_64",
                 "--sbom-path", str(sboms))
    image = doc["image"]["manifests"]["amd64"]
    assert len(image["layers"]) == len(image["diff_ids"]) == 2  # replayout+baselayout, top
    assert sorted({s["attrs"].get("layer") for s in doc["spans"] if s["name"] == "layer"}) \
        == [0, 1]
    sbom = json.loads((sboms / "sbom-x86_64.spdx.json").read_text())
    assert sbom["name"] == f"sbom-{image['layers'][0]['digest']}"
    layer_ids = [p["SPDXID"] for p in sbom["packages"]
                 if p.get("description") == "apko operating system layer"]
    assert layer_ids == [f"SPDXRef-Package-ImageLayer-{la['digest'].replace(':', '-')}"
                         for la in image["layers"]]


def test_with_mtime_is_replace() -> None:
    """The layering's fast copy of a Meta keeps every field (a field added to Meta and not
    to it would fail here)."""
    import dataclasses

    from builder.fs.model import Meta
    from builder.layering import _with_mtime

    values = {f.name: (f"v-{f.name}" if f.type in ("str", str) else
                       {"user.x": "1"} if f.name == "xattrs" else 7 + i)
              for i, f in enumerate(dataclasses.fields(Meta))}
    m = Meta(**values)
    assert _with_mtime(m, 123) == dataclasses.replace(m, mtime=123)
    assert _with_mtime(m, 123) != dataclasses.replace(m, mtime=124)
