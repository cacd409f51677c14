"""How implementations are registered: a stage module (`builder/stages/<stage>.py`) declares
one `StageSpec` named `STAGE` listing its `Impl` records. An `Impl` names the implementation
(which satisfies its stage's protocol, builder/stages/base.py) and says in data what it offers
the other stages' implementations (`provides`) and what it needs from them (`requires`:
stage -> capability); `builder.stages.profiles` checks a chosen combination against these
records before anything runs.

Plain classes, not dataclasses: the registry is read for `--help` and `--impl`, where start-up
time counts, and it loads no implementation code (`Impl.target` may name it by module path).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from builder.errors import ConfigError

# What an implementation can offer the others; `requires` names these.
CAPABILITIES: dict[str, str] = {
    "stitchable": "expanded packages that keep their original compressed data sections and "
                  "DEFLATE block indexes",
    "package-extents": "a filesystem model whose files point into the packages' data tars",
    "deflate": "a DEFLATE (gzip) engine and level for the bytes a stitched layer compresses",
}


class Impl:
    """One registered implementation of a stage. `target` is the implementation object, or
    "module:attribute" naming it: then the module is imported on first use of `obj`."""

    __slots__ = ("stage", "name", "target", "help", "provides", "requires", "_obj")

    def __init__(self, stage: str, name: str, target: Any, help: str, *,
                 provides: frozenset[str] = frozenset(),
                 requires: Mapping[str, str] | None = None) -> None:
        self.stage, self.name, self.target, self.help = stage, name, target, help
        self.provides = frozenset(provides)
        self.requires = dict(requires or {})  # stage -> capability
        self._obj: Any = None if isinstance(target, str) else target
        for cap in (*self.provides, *self.requires.values()):
            if cap not in CAPABILITIES:
                raise ValueError(f"{stage}={name}: unknown capability {cap!r}")

    @property
    def obj(self) -> Any:
        """The implementation (satisfies the stage's protocol)."""
        if self._obj is None:
            module, _, attr = self.target.partition(":")
            self._obj = getattr(importlib.import_module(module), attr)
        return self._obj

    def __repr__(self) -> str:
        return f"Impl({self.stage}={self.name})"


class StageSpec:
    """A stage's registered implementations, plus parametric forms (`compress=zlib:9`):
    `parametric(name)` makes the Impl of such a form, or None; `parametric_samples` are the
    forms the conformance suite builds and checks (a sample of each family)."""

    __slots__ = ("name", "impls", "parametric", "parametric_help", "parametric_samples")

    def __init__(self, name: str, impls: tuple[Impl, ...],
                 parametric: Callable[[str], Impl | None] | None = None,
                 parametric_help: tuple[str, ...] = (),
                 parametric_samples: tuple[str, ...] = ()) -> None:
        self.name, self.impls = name, tuple(impls)
        self.parametric, self.parametric_help = parametric, tuple(parametric_help)
        self.parametric_samples = tuple(parametric_samples)
        names = [i.name for i in self.impls]
        if len(set(names)) != len(names) or "reference" not in names:
            raise ValueError(f"stage {name}: implementation names must be unique and "
                             f"include 'reference' (got {names})")
        for i in self.impls:
            if i.stage != name:
                raise ValueError(f"stage {name}: {i.name} is registered for {i.stage}")

    def names(self) -> list[str]:
        return sorted(i.name for i in self.impls)

    def get(self, name: str) -> Impl:
        """The implementation `name` (registered or parametric); ConfigError if none."""
        for i in self.impls:
            if i.name == name:
                return i
        found = self.parametric(name) if self.parametric is not None else None
        if found is None:
            choices = self.names() + list(self.parametric_help)
            raise ConfigError(f"--impl: stage {self.name!r} has no implementation {name!r} "
                              f"(available: {', '.join(choices)})")
        return found
