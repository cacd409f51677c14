"""Stage contracts: what every implementation of a stage promises — a `Protocol` per stage
— and the result types implementations and the pipeline share (`LayerResult`, `BlobResult`,
`LayerTarget`).

How implementations are registered (the `Impl` records a stage module declares, with what
they provide to and require of other stages) is `builder/stages/spec.py`. The pipeline calls
through these protocols only; `tests/conformance/` holds every registered implementation to
its stage's contract. This module imports no implementation at run time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from builder.apk.model import Package
    from builder.apk.signing import Keyring
    from builder.artefacts import ArchArtefacts, BuildResult
    from builder.config import ImageConfig
    from builder.expand.model import ExpandedPackage
    from builder.fs.model import FsModel
    from builder.install.rules import InstallState
    from builder.layering import LayerPart
    from builder.mutate import MutateContext, MutateResult
    from builder.oci.image import Blob, BuiltImage
    from builder.oci.publish import PushSummary
    from builder.repo.cache import Cache
    from builder.repo.fetch import Fetcher
    from builder.repo.repository import Repository

LayerOutput = Literal["file", "stream", "blob"]


# ------------------------------------------------------------------------------ results


@dataclass
class LayerResult:
    """One uncompressed layer tar: its diffID and size; `path` for a tar written to a file.
    A layer writer whose output is the finished blob also returns `blob`; its span
    attributes go in `attrs` (layer span) and `blob_attrs` (compress span)."""

    path: Path | None
    diff_id: str  # "sha256:<hex>"
    size: int
    entries: int
    blob: BlobResult | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    blob_attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class BlobResult:
    """A compressed layer blob on disk."""

    path: Path
    digest: str  # "sha256:<hex>" of the blob
    size: int  # compressed bytes
    size_in: int = 0  # uncompressed bytes (when the compressor saw them)


@dataclass(frozen=True)
class LayerTarget:
    """Where a layer writer puts its output, by its `output` kind: `path` (the tar for
    "file", the blob for "blob"), `sink` ("stream"), and for "blob" the compressor setting
    whose engine compresses the bytes the writer does not reuse."""

    path: Path | None = None
    sink: Sink | None = None
    compressor: Compressor | None = None
    # One layer of a layered image (builder/layering.py); None: the whole tree in one layer.
    part: LayerPart | None = None


# ------------------------------------------------------------------------------ protocols


class ConfigLoader(Protocol):
    def __call__(self, path: str | Path, workdir: str | Path | None,
                 overrides: dict[str, Any]) -> ImageConfig: ...


class IndexLoader(Protocol):
    def __call__(self, repositories: list[Repository], apk_arch: str, keyring: Keyring,
                 fetcher: Fetcher, allow_untrusted: bool) -> list[Package]: ...


class Resolver(Protocol):
    def __call__(self, world: list[str], packages: list[Package],
                 apk_arch: str) -> list[Package]: ...


class PackageFetcher(Protocol):
    """Every package as a verified local `.apk` (size, `C:`, datahash checked)."""

    def __call__(self, packages: list[Package], apk_arch: str, fetcher: Fetcher,
                 keyring: Keyring | None) -> dict[str, Path]: ...


class Expander(Protocol):
    """name -> verified `.apk` path  =>  name -> ExpandedPackage. `cache` is the build's
    cache (an expander may keep its artefacts there); `block_index` says the layer will need
    each data section's DEFLATE block index."""

    def __call__(self, paths: dict[str, Path], workdir: Path, *, cache: Cache | None = None,
                 block_index: bool = False) -> dict[str, ExpandedPackage]: ...


class Installer(Protocol):
    """Makes the filesystem model it installs into, then lays the packages into it."""

    def new_filesystem(self, root: Path) -> FsModel:
        """`root` is where an on-disk model keeps its files."""
        ...

    def install(self, state: InstallState, expanded: list[ExpandedPackage]) -> None: ...


class Mutator(Protocol):
    def __call__(self, fs: FsModel, ctx: MutateContext) -> MutateResult: ...


class Sink(Protocol):
    """A compressed stream being written to a file; bytes in by `write`, blob out by
    `close`. `abort` (or leaving a `with` block on an error) removes the file."""

    def write(self, data: bytes | bytearray | memoryview) -> None: ...

    def reusable_buffer(self) -> bytearray | None:
        """A buffer handed over by `write` earlier that may be filled again, or None."""
        ...

    def close(self) -> BlobResult: ...

    def abort(self) -> None: ...

    def __enter__(self) -> Sink: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...


class Compressor(Protocol):
    """One compressor setting. Its bytes depend only on the setting and the input: the same
    through `compress_file` and through `sink`, however the input is split."""

    name: str
    media_type: str  # of the layer blobs it makes
    suffix: str  # file name suffix of the blob (".gz", ".zst")
    # (engine, level) a stitched layer may compress its cut bytes with; None if the setting
    # is not DEFLATE.
    deflate_engine: tuple[str, int] | None

    def settings(self) -> dict[str, str]:
        """Compress span attributes naming the setting (strings: the harness sums numbers)."""
        ...

    def sink(self, out_path: Path) -> Sink: ...

    def compress_file(self, tar_path: Path, out_path: Path) -> BlobResult: ...


class LayerWriter(Protocol):
    """Writes the image's layer tar from the filesystem model, as `output` says: a tar file
    ("file", compressed afterwards), a stream into the compressor's sink ("stream"), or the
    finished compressed blob itself ("blob")."""

    output: LayerOutput
    layer_format: str  # writers of one format make the same tar for the same model
    needs_block_index: bool  # the expand stage must make each package's block index
    writes_parts: bool  # can write one layer of a layered image (LayerTarget.part)

    def write(self, fs: FsModel, packages: list[ExpandedPackage],
              target: LayerTarget) -> LayerResult: ...


class SbomWriter(Protocol):
    def __call__(self, arch: ArchArtefacts, fs: FsModel, outdir: Path, repo: str) -> Path: ...


class OciWriter(Protocol):
    def __call__(self, images: list[BuiltImage], index: Blob, layers: dict[str, Path],
                 out: Path, tag: str) -> int: ...


class ImagePublisher(Protocol):
    def __call__(self, result: BuildResult, refs: list[str]) -> PushSummary: ...
