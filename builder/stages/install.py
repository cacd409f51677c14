"""The `install` stage: each package's data tar laid into the image filesystem model in
install order (builder/install/rules.py), then the installed db, scripts.tar and triggers
(builder/install/apkdb.py). The pipeline has already written the database skeleton
(`init_db`) into the model the installer made.

`reference` installs into an `FsRoot` (every file extracted to a root directory on disk);
`fast` into a `MemFs` (nothing is written: file nodes are extents of the cached data tars,
and the cyclic GC is paused while the nodes are created). Both run the same rules.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from builder.stages.spec import Impl, StageSpec

if TYPE_CHECKING:
    from builder.expand.model import ExpandedPackage
    from builder.fs.model import FsModel
    from builder.install.rules import InstallState


def _install_all(state: InstallState, expanded: list[ExpandedPackage]) -> None:
    from builder.install.apkdb import resolve_apk_db, write_db
    from builder.install.rules import install_package

    for exp in expanded:
        install_package(state, exp)
    write_db(state)
    resolve_apk_db(state.fs)


class DiskInstaller:
    """Installs into a root directory on disk."""

    def new_filesystem(self, root: Path) -> FsModel:
        from builder.fs.disk import FsRoot

        return FsRoot(root)

    def install(self, state: InstallState, expanded: list[ExpandedPackage]) -> None:
        _install_all(state, expanded)


class MemoryInstaller:
    """Installs into an in-memory model whose files point into the data tars."""

    def new_filesystem(self, root: Path) -> FsModel:
        from builder.fs.memory import MemFs

        return MemFs()

    def install(self, state: InstallState, expanded: list[ExpandedPackage]) -> None:
        from builder.util.gcpause import paused

        with paused():
            _install_all(state, expanded)


STAGE = StageSpec("install", (
    Impl("install", "reference", DiskInstaller(), "extract every file to a root on disk"),
    Impl("install", "fast", MemoryInstaller(),
         "in-memory model, files point into the cached data tars",
         provides=frozenset({"package-extents"})),
))
