"""Named workloads: generated once into the cache dir, reused, or taken from a directory."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from perf.corpus import CorpusError
from perf.workloads import prepare_workload


@pytest.mark.slow
def test_small_generated_once_then_reused(tmp_path: Path) -> None:
    root = tmp_path / "workloads"
    w = prepare_workload("small", root)
    assert w.name == "small" and w.arch == "x86_64"
    assert w.repo_dir.parent == root.resolve() and w.repo_dir.name.startswith("small-s1-v")
    assert (w.repo_dir / "x86_64" / "APKINDEX.tar.gz").is_file()
    assert w.key_path.is_file() and w.key_path.parent == w.repo_dir
    cfg = yaml.safe_load(w.config_path.read_text())
    # No path may point into the temporary directory the corpus was generated in.
    assert cfg["contents"]["repositories"] == [str(w.repo_dir)]
    assert cfg["contents"]["keyring"] == [str(w.key_path)]
    stamp = (w.repo_dir / "x86_64" / "APKINDEX.tar.gz").stat().st_mtime_ns
    again = prepare_workload("small", root)
    assert again == w
    assert (w.repo_dir / "x86_64" / "APKINDEX.tar.gz").stat().st_mtime_ns == stamp
    assert [p.name for p in root.iterdir()] == [w.repo_dir.name]  # no temp dirs left
    # An existing corpus directory works as a workload by path.
    by_path = prepare_workload(str(w.repo_dir), root)
    assert by_path.config_path == w.config_path and by_path.key_path == w.key_path


@pytest.mark.slow
def test_incomplete_cache_dir_is_regenerated(tmp_path: Path) -> None:
    root = tmp_path / "w"
    w = prepare_workload("small:5", root)
    (w.repo_dir / "corpus.json").unlink()
    w2 = prepare_workload("small:5", root)
    assert w2.repo_dir == w.repo_dir and (w2.repo_dir / "corpus.json").is_file()


def test_unknown_workload_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="unknown workload 'nope'"):
        prepare_workload("nope", tmp_path)
    with pytest.raises(CorpusError, match="seed"):
        prepare_workload("small:x", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="apko.yaml"):
        prepare_workload(str(tmp_path / "empty"), tmp_path)


def test_generation_runs_in_a_child_and_reports_its_failure(tmp_path: Path) -> None:
    """The generator's memory stays out of the harness process (it runs in a child), and a
    failure there is a clear error in the parent with nothing left behind."""
    import os

    import pytest

    from perf.corpus import CorpusError
    from perf.workloads import _generate_into

    def make(tmp: Path) -> None:
        (tmp / "pid").write_text(str(os.getpid()))
        (tmp / "corpus.json").write_text("{}")

    final = tmp_path / "ok"
    _generate_into(final, make)
    assert int((final / "pid").read_text()) != os.getpid()

    def broken(tmp: Path) -> None:
        raise ValueError("no space for the go package")

    with pytest.raises(CorpusError, match="ValueError: no space for the go package"):
        _generate_into(tmp_path / "bad", broken)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok"]
