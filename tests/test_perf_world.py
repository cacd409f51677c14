"""The world (perf/world.py, perf/worldrun.py, perf/worldreport.py): the catalogue's shape and
sharing; a world built with and without the layer cache gives, image by image, the digests of
single `apkimage build` runs; world-bump rebuilds only the images holding the bumped package,
and in them only the layers it changed — asserted from the records; the report's world page
from two commits' records, every link of every page resolving."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from builder.cli import main
from perf import drilldown, records, worldreport, worldrun
from perf.report import write_report
from perf.world import (
    BASE,
    DEFAULT_BUMP,
    DEV_EXTRAS,
    World,
    catalogue,
    contents,
    debian_catalogue,
    image_config,
    prepare_world,
    sharing,
)
from perf.worldrun import Variant, WorldJob, WorldPlan, parse_variants
from tests.helpers import WORLD_IMAGES, broken_links, make_rec, world_doc

SUBSET = ("static", "glibc-dynamic", "sqlite", "sqlite-dev", "python-3.12", "git")


def test_the_catalogue_is_shaped_like_a_real_one() -> None:
    images = catalogue()
    assert 30 <= len(images) <= 60
    kinds = Counter(i.kind for i in images)
    for kind in ("static", "glibc-dynamic", "busybox", "bash", "git", "python", "go", "jdk"):
        assert kinds[kind], kind
    names = {i.name for i in images}
    assert len(names) == len(images)
    devs = [i for i in images if i.dev]
    assert len(devs) >= len(images) / 3
    for dev in devs:  # a -dev variant is its image plus a shell and a package manager
        base = next(i for i in images if i.name == dev.name.removesuffix("-dev"))
        assert set(base.packages) < set(dev.packages)
        assert set(DEV_EXTRAS) <= set(dev.packages)
    for image in images:
        assert image.packages[:len(BASE)] == BASE
        doc = image_config(image, "/repo", "/repo/key.rsa.pub")
        assert doc["layering"] == {"strategy": "origin", "budget": 10}


def test_the_debian_catalogue_is_a_smaller_one() -> None:
    images = debian_catalogue()
    assert 10 <= len(images) < len(catalogue())
    assert {i.kind for i in images} >= {"busybox", "bash", "git", "go", "toolchain"}
    assert all(i.packages[0] == "debian-baselayout" for i in images)


def test_variants() -> None:
    assert parse_variants(["reference,fast", "stitched+lc"]) == [
        Variant("reference", False), Variant("fast", False), Variant("stitched", True)]
    assert [v.name for v in parse_variants(["fast,compress=zstd:3+lc"])] == [
        "fast,compress=zstd:3+lc"]
    assert parse_variants(["fast,stitched"], layer_cache=True) == [
        Variant("fast", True), Variant("stitched", True)]


@pytest.fixture(scope="module")
def world_small(tmp_path_factory: pytest.TempPathFactory) -> World:
    return prepare_world("world-small", tmp_path_factory.mktemp("worlds"))


@pytest.mark.slow
def test_the_images_share_base_packages(world_small: World, tmp_path: Path) -> None:
    installed = contents(world_small, tmp_path / "cache")
    assert len(installed) == len(catalogue()) == len(world_small.configs)
    share = sharing(installed)
    n = share["images"]
    holders = {p: len(v) for p, v in share["holders"].items()}
    assert set(BASE) <= set(share["in_every_image"])
    assert holders["glibc"] == n - 1  # all but static
    assert n / 2 <= holders["busybox"] < n  # the -dev variants, busybox, bash, wolfi-base
    assert holders["sqlite-libs"] == 6  # what world-bump bumps: sqlite and the pythons
    assert holders["go"] == 2 and holders["openjdk-17-jre-base"] == 6
    assert share["mean_images_per_package"] > 5


def _single(config: Path, impl: str, cache: Path, out: Path,
            capsys: pytest.CaptureFixture[str]) -> str:
    out.parent.mkdir(parents=True, exist_ok=True)
    assert main(["build", str(config), f"{config.stem}:latest", str(out), "--impl", impl,
                 "--cache-dir", str(cache), "--json"]) == 0
    return json.loads(capsys.readouterr().out)["index_digest"]


@pytest.mark.slow
def test_a_world_and_its_bump_from_the_records(world_small: World, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")  # as the harness's builds have it
    sub = World("world-small", [c for c in world_small.configs if c.stem in SUBSET],
                [i for i in world_small.images if i.name in SUBSET], world_small.repo_dir,
                world_small.key_path, world_small.root, world_small.preset, world_small.seed)
    plan = WorldPlan(sub, parse_variants(["fast,fast+lc,stitched+lc"]), ["world", "world-bump"],
                     work_root=tmp_path / "run", keep=True)
    job = WorldJob(plan)
    doc = job.run()
    assert doc["checks"] == []  # the layer cache on and off: the same digests
    runs = {(r["scenario"], r["variant"]): r for r in doc["runs"]}
    assert set(runs) == {(s, v) for s in ("world", "world-bump")
                         for v in ("fast", "fast+lc", "stitched+lc")}

    # Image by image, the digests of single builds on a fresh cache, without the layer cache.
    configs = {c.stem: c for c in (job.dir / "configs").glob("*.yaml")}
    for impl, variants in (("fast", ("fast", "fast+lc")), ("stitched", ("stitched+lc",))):
        for name in SUBSET:
            digest = _single(configs[name], impl, tmp_path / f"single-{impl}",
                             tmp_path / "single" / impl / name, capsys)
            for v in variants:
                img = next(i for i in runs[("world", v)]["per_image"] if i["name"] == name)
                assert img["digest"] == digest, (name, v)

    # world-bump: only the images holding the bumped package make anything.
    package = DEFAULT_BUMP[0]
    holding = {name for name, pins in contents(sub, tmp_path / "resolve").items()
               if any(p.split("=")[0] == package for p in pins)}
    assert holding == {"sqlite", "sqlite-dev", "python-3.12"}
    for v in ("fast+lc", "stitched+lc"):
        world, bump = runs[("world", v)], runs[("world-bump", v)]
        assert world["layer_cache_misses"] > 0 and world["images_rebuilt"] == len(SUBSET)
        for img in bump["per_image"]:
            if img["name"] in holding:  # its package layer and the top layer (the apk db)
                assert img["rebuilt"] and 1 <= img["layers_made"] <= 2, (v, img["name"])
                assert img["layer_cache_misses"] == img["layers_made"]
                assert img["bytes_hashed"] > 0
            else:
                assert not img["rebuilt"], (v, img["name"])
                assert img["layers_made"] == img["layer_cache_misses"] == 0
                assert img["bytes_hashed"] == img["bytes_compressed"] == 0
                assert img["layer_cache_hits"] == img["layers"] > 0
        assert bump["bytes_hashed"] < world["bytes_hashed"] / 2
        assert {i["name"] for i in bump["per_image"] if i["rebuilt"]} == holding
        before = {i["name"]: i["digest"] for i in world["per_image"]}
        changed = {i["name"] for i in bump["per_image"] if i["digest"] != before[i["name"]]}
        assert changed == holding
    # without the layer cache every image is made again, every layer
    fast = runs[("world-bump", "fast")]
    assert fast["images_rebuilt"] == len(SUBSET) and fast["layer_cache_hits"] == 0

    # The record round-trips and renders as the report's world section.
    path = worldrun.save(tmp_path, doc)
    assert worldrun.load(tmp_path)[0]["job"] == doc["job"] and path.is_file()
    index = write_report([], tmp_path / "report", world_docs=worldrun.load(tmp_path))
    assert "<h2>Build the world</h2>" in index.read_text()
    page = (tmp_path / "report" / worldreport.PAGE).read_text()
    assert page.count("<svg") >= 4  # CPU per image and the trend, per scenario
    assert "world-bump stitched+lc: sqlite-libs" in page
    bump = page.split("<h2 id='bump'>")[1].split("<h2")[0]  # the layers, from real spans
    assert "package layer" in bump and "top layer (own files, apk database)" in bump
    assert "then from the cache in" in bump
    assert broken_links(tmp_path / "report" / worldreport.PAGE) == []
    table = worldrun.format_table(doc)
    assert "3/6 images rebuilt anything" in table


A, B, C, D = "a" * 40, "b" * 40, "c" * 40, "d" * 40


def _world_report(tmp_path: Path) -> tuple[Path, Path]:
    """Run records of A, B and C (so each has a commit page); world records of A, B (the
    latest, less CPU) and D (no run record, so no commit page)."""
    results, out = tmp_path / "results", tmp_path / "flamegraphs"
    for i, commit in enumerate([A, B, C]):
        records.save_record(results, make_rec(commit=commit, job=f"job-{i}",
                                              started=f"2026-01-0{i + 1}T00:00:00.000+00:00"))
    for commit, day, scale in ((D, 1, 1.5), (A, 2, 1.0), (B, 3, 0.5)):
        worldrun.save(tmp_path, world_doc(commit, f"2026-01-0{day}T12:00:00.000+00:00", scale))
    dates = {D: 0, A: 1, B: 2, C: 3}
    index = write_report(records.load_records(results), out, dates.get,
                         world_docs=worldrun.load(tmp_path), subject=lambda c: f"commit {c[0]}")
    return index, out


def test_the_world_page_from_two_commits_records(tmp_path: Path) -> None:
    index, out = _world_report(tmp_path)
    page = out / worldreport.PAGE
    html = page.read_text()
    assert f"commit <a href='commits/{B[:12]}.html'>{B[:12]}</a>" in html  # the latest
    # the totals per scenario and variant, and the ratios between the variants
    for scen in ("world", "world-bump"):
        for variant in ("fast", "stitched+lc"):
            assert f"<td class='l'>{scen}</td><td class='l'>{variant}</td><td>1</td>" in html
    assert "world: stitched+lc uses x" in html and "world-bump: stitched+lc uses x" in html
    # a chart per scenario, each bar saying what its image reused
    for scen in ("world", "world-bump"):
        assert f"<h2 id='chart-{scen}'>CPU per image: {scen}</h2><p>" in html
        assert "<svg" in html.split(f"id='chart-{scen}'")[1].split("<h2")[0]
    assert "<title>static stitched+lc: " in html and "2 from the layer cache, 0 made" in html
    # per image and variant, with where its CPU went
    images = html.split("<h2 id='images-world'>")[1].split("<h2")[0]
    for name in WORLD_IMAGES:
        for variant in ("fast", "stitched+lc"):
            assert f"<td class='l'>{name}</td><td class='l'>{variant}</td>" in images
    assert "<th>layers made</th>" in images and "<th>install</th>" in images
    # world-bump: the two images holding sqlite-libs, their package and top layers
    bump = html.split("<h2 id='bump'>")[1].split("<h2")[0]
    assert "world-bump stitched+lc: sqlite-libs -&gt; 3.45.3-r1: 2/3 images rebuilt" in bump
    assert "layer 1, package layer (x86_64)" in bump
    assert "then from the cache in sqlite-dev" in bump  # the bumped layer, made once
    assert "layer 2, top layer (own files, apk database) (x86_64)" in bump
    assert "The other image made nothing (every layer from the layer cache): static" in bump
    assert "No layer cache: every image made all its layers again (9 layers" in bump
    # the trend: every commit with a world record, linked to its page when it has one
    trend = html.split("<h2 id='trend'>")[1].split("<h2")[0]
    assert trend.count("<svg") == 2  # world and world-bump
    for commit in (A, B):  # per chart, a point per variant and the commit's label
        assert trend.count(f'xlink:href="commits/{commit[:12]}.html"') == 2 * 3
    assert D[:8] in trend and f"commits/{D[:12]}" not in html
    assert C[:8] not in trend
    for commit in (A, B, D):
        assert f"<tr id='{worldreport.anchor((commit, False))}'>" in html
    # index: the headline ratios and a link to the page; commit pages link to theirs
    text = index.read_text()
    summary = text.split("<h2>Build the world</h2>")[1].split("<h2>")[0]
    assert "href='world.html'" in summary and "world: stitched+lc uses x" in summary
    for commit in (A, B):
        commit_page = (out / drilldown.href((commit, False))).read_text()
        assert f"href='../world.html#c-{commit[:12]}'" in commit_page
    assert "No world record at this point." in (out / drilldown.href((C, False))).read_text()
    for p in [index, page, *sorted((out / drilldown.PAGES).glob("*.html"))]:
        assert broken_links(p) == [], p.name


def test_no_world_page_without_world_records(tmp_path: Path) -> None:
    index = write_report([], tmp_path / "out", world_docs=[])
    assert not (tmp_path / "out" / worldreport.PAGE).exists()
    assert "No world records yet" in index.read_text()
