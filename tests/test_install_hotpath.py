"""The install hot path's shortcuts give exactly what the straightforward code gives: the
installed-db file-list order (string key instead of the pairwise comparator) and the
resolution cache of `FsModel` (parent directories resolved once, emptied on symlink
changes)."""

from __future__ import annotations

import functools
import posixpath

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builder.apk.installed_db import FileRecord, _path_compare, clean_file_list
from builder.errors import FormatError
from builder.fs.kinds import SYMLINK
from builder.fs.memory import MemFs
from builder.fs.model import FsModel


def _clean_file_list_plain(files: list[FileRecord]) -> list[FileRecord]:
    """The file-list cleaning as first written: comparator sort, then a parent walk."""
    ordered = sorted(files, key=functools.cmp_to_key(_path_compare))
    dirs = {f.path.rstrip("/") for f in ordered if f.is_dir} | {"", "."}
    out = []
    for f in ordered:
        parent = posixpath.dirname(f.path.rstrip("/"))
        keep = True
        while parent not in ("", "."):
            if parent not in dirs:
                keep = False
                break
            parent = posixpath.dirname(parent)
        if keep:
            out.append(f)
    return out


_names = st.sampled_from(["a", "b", "ab", "a.b", "B", "z", ".h", "é", "a-b", "a b"])
_paths = st.lists(_names, min_size=1, max_size=4).map("/".join)
_odd_paths = st.one_of(_paths, _paths.map(lambda p: p + "/"), _paths.map(lambda p: "./" + p),
                       _paths.map(lambda p: p.replace("/", "//", 1)),
                       _paths.map(lambda p: p.replace("/", "/./", 1)))


def _tree_order(paths: list[str]) -> list[FileRecord]:
    """Records as a package lists them: every directory before what is under it."""
    dirs = sorted({posixpath.dirname(p) for p in paths} - {""})
    out = [FileRecord(d, True, 0o755) for d in dirs]
    out += [FileRecord(p, False, 0o644) for p in paths if p not in dirs]
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_odd_paths, st.booleans()), max_size=25))
def test_file_list_order_any_input(items: list[tuple[str, bool]]) -> None:
    files = [FileRecord(p, d, 0o755 if d else 0o644) for p, d in items]
    assert [id(f) for f in clean_file_list(files)] == \
        [id(f) for f in _clean_file_list_plain(files)]


@settings(max_examples=200, deadline=None)
@given(st.lists(_paths, max_size=40), st.randoms(use_true_random=False))
def test_file_list_order_package_like(paths: list[str], rnd) -> None:
    files = _tree_order(paths)
    # shuffle files within the listing but keep directories before their contents
    files = sorted(files, key=lambda f: (f.path.count("/"), rnd.random()))
    assert [id(f) for f in clean_file_list(files)] == \
        [id(f) for f in _clean_file_list_plain(files)]


def test_file_list_files_before_subdirectories() -> None:
    files = [FileRecord("usr", True, 0o755), FileRecord("usr/lib", True, 0o755),
             FileRecord("usr/lib/x.so", False, 0o755), FileRecord("usr/b", False, 0o644),
             FileRecord("usr/a", True, 0o755), FileRecord("orphan/f", False, 0o644)]
    got = [f.path for f in clean_file_list(files)]
    assert got == ["usr", "usr/b", "usr/a", "usr/lib", "usr/lib/x.so"]
    assert got == [f.path for f in _clean_file_list_plain(files)]


# -- resolution cache --------------------------------------------------------------------

_ops = st.lists(st.tuples(
    st.sampled_from(["mkdir", "file", "symlink", "remove"]), _paths,
    st.one_of(_paths, _paths.map(lambda p: "/" + p), _paths.map(lambda p: "../" + p),
              st.just(".."), st.just("/"))), max_size=30)


def _outcome(fn, *args, **kw):
    try:
        return ("ok", fn(*args, **kw))
    except FormatError as exc:
        return ("error", str(exc))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_ops, st.lists(_odd_paths, min_size=1, max_size=10))
def test_resolve_cache_matches_walk(ops, probes: list[str]) -> None:
    fs = MemFs()
    for op, path, target in ops:
        try:
            if op == "mkdir":
                fs.mkdir_all(path)
            elif op == "file":
                fs.write_file(path, b"x")
            elif op == "symlink":
                fs.symlink(path, target, mtime=0)
            else:
                fs.remove(path)
        except FormatError:
            pass
        for probe in probes + [path]:  # warm the cache between changes
            for follow in (True, False):
                assert _outcome(fs.resolve, probe, follow=follow, who="w") == \
                    _outcome(fs._walk_resolve, probe, follow, "w")


def test_symlink_change_invalidates_cached_parent() -> None:
    fs = FsModel.__new__(MemFs)
    MemFs.__init__(fs)
    fs.mkdir_all("usr/lib")
    fs.mkdir_all("lib")
    assert fs.resolve("lib/x", follow=False) == "lib/x"  # caches "lib"
    fs.remove("lib")
    fs.symlink("lib", "usr/lib", mtime=0)
    assert fs.meta["lib"].kind == SYMLINK
    assert fs.resolve("lib/x", follow=False) == "usr/lib/x"
    fs.remove("lib")
    assert fs.resolve("lib/x", follow=False) == "lib/x"


def test_symlink_loop_error_names_the_full_path() -> None:
    fs = MemFs()
    fs.symlink("a", "b", mtime=0)
    fs.symlink("b", "a", mtime=0)
    with pytest.raises(FormatError, match=r"too many levels of symlinks resolving 'a/x'"):
        fs.resolve("a/x", follow=False, who="pkg")
    fs.symlink("up", "../..", mtime=0)
    with pytest.raises(FormatError, match=r"pkg: path 'up/f' escapes the image root"):
        fs.resolve("up/f", follow=False, who="pkg")
