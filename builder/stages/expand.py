"""The `expand` stage: split each fetched `.apk` into its sections, decompress the data tar
once, verify every regular file's `APK-TOOLS.checksum.SHA1`, index the tar headers.

`reference` (builder/expand/reference.py): serial, zlib, data tars written under the build's
work directory. `fast` (builder/expand/cached.py): thread pool, ISA-L, each data tar
decompressed once, ever, into the cache and reused by every later build; with
`block_index` (the layer stitches) the DEFLATE block index is recorded in the same pass.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from builder.stages.spec import Impl, StageSpec

if TYPE_CHECKING:
    from builder.expand.model import ExpandedPackage
    from builder.repo.cache import Cache


def expand_reference(paths: dict[str, Path], workdir: Path, *, cache: Cache | None = None,
                     block_index: bool = False) -> dict[str, ExpandedPackage]:
    """Serially expand every package (no cache, no block indexes)."""
    from builder.expand.reference import expand_one

    workdir.mkdir(parents=True, exist_ok=True)
    return {name: expand_one(p, workdir) for name, p in paths.items()}


def expand_fast(paths: dict[str, Path], workdir: Path, *, cache: Cache | None = None,
                block_index: bool = False) -> dict[str, ExpandedPackage]:
    from builder.expand.cached import expand_packages

    return expand_packages(paths, workdir, cache, block_index=block_index)


STAGE = StageSpec("expand", (
    Impl("expand", "reference", expand_reference,
         "serial, zlib, data tars in the build's work directory"),
    Impl("expand", "fast", expand_fast,
         "thread pool, ISA-L, data tars decompressed once into the cache",
         provides=frozenset({"stitchable"})),
))
