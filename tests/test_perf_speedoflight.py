"""The speed-of-light floor reads exactly the cached data tars and .apk files."""

from __future__ import annotations

from pathlib import Path

from perf.speedoflight import cached_packages, measure


def test_measures_cached_packages(tmp_path: Path) -> None:
    for i, (tar, apk) in enumerate([(3000, 1000), (5000, 2000)]):
        d = tmp_path / "v1" / "apk" / f"a{i}" / f"{i:040x}"
        d.mkdir(parents=True)
        (d / "data.tar").write_bytes(b"t" * tar)
        (d / "package.apk").write_bytes(b"c" * apk)
    lone = tmp_path / "v1" / "apk" / "zz" / "f"
    lone.mkdir(parents=True)
    (lone / "data.tar").write_bytes(b"x" * 999)  # no .apk beside it: not counted
    assert len(cached_packages(tmp_path)) == 2
    sol = measure(tmp_path, repeats=2)
    assert sol is not None
    assert (sol.uncompressed_bytes, sol.compressed_bytes, sol.packages) == (8000, 3000, 2)
    assert sol.seconds > 0 and sol.parallel_seconds > 0
    assert "2 packages" in sol.describe() and "two threads" in sol.describe()


def test_empty_cache_has_no_floor(tmp_path: Path) -> None:
    assert measure(tmp_path) is None
