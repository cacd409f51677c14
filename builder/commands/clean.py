"""`apkimage clean`: remove the cache directory (packages, indexes, expanded data), after
saying how big it is; `--dry-run` only measures it."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from builder.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("clean", help="remove the cache directory", description=__doc__)
    p.add_argument("--cache-dir", default=None, help="cache root (default ~/.cache/apkimage)")
    p.add_argument("--dry-run", action="store_true", help="show the cache size, delete nothing")
    p.add_argument("--json", action="store_true", help="print {path, bytes, files, removed}")
    p.set_defaults(func=run)


def human(n: int) -> str:
    """apko's size format: `N B` under 1 KiB, else one decimal and K/M/G/T/P/E (base 1024)."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in "KMGTPE":
        value /= 1024
        if value < 1024 or unit == "E":
            return f"{value:.1f} {unit}B"
    raise AssertionError("unreachable")


def measure(path: Path) -> tuple[int, int]:
    """(bytes, files) of the regular files under `path` (symlinks not followed)."""
    size = files = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            st = os.lstat(os.path.join(root, name))
            if not os.path.islink(os.path.join(root, name)):
                size += st.st_size
                files += 1
    return size, files


def run(args: argparse.Namespace) -> int:
    import json
    import logging
    import shutil

    from builder.repo.cache import default_cache_dir

    path = Path(args.cache_dir).absolute() if args.cache_dir else default_cache_dir()
    logging.getLogger(__name__).info("Cleaning cache directory: %s", path)
    if not path.exists():
        size = files = 0
        removed = False
        line = f"{path}: does not exist, nothing to clean"
    elif not path.is_dir():
        raise ConfigError(f"cache path is not a directory: {path}")
    else:
        size, files = measure(path)
        removed = not args.dry_run
        if removed:
            shutil.rmtree(path)
        line = (f"{path}: {human(size)} in {files} files"
                + (", removed" if removed else " (dry run: nothing deleted)"))
    if args.json:
        print(json.dumps({"path": str(path), "bytes": size, "files": files,
                          "removed": removed}))
    else:
        print(line)
    return 0
