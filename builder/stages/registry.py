"""The registry: every stage's `StageSpec`, found by the stage's name (DESIGN.md's vocabulary,
`builder.spans.STAGES`) in `builder/stages/<stage>.py`.

`current()` is what builds and `--impl` use; `using(registry)` swaps in another for the span
of a `with` block (tests register extra or deliberately broken implementations that way,
without touching the real one).
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator, Mapping

from builder.spans import STAGES
from builder.stages.spec import Impl, StageSpec


class Registry:
    """Stage name -> StageSpec; loaded on first use."""

    def __init__(self, specs: Mapping[str, StageSpec] | None = None) -> None:
        self._specs = dict(specs) if specs is not None else None

    def _loaded(self) -> dict[str, StageSpec]:
        if self._specs is None:
            specs = {}
            for name in STAGES:
                spec = importlib.import_module(f"builder.stages.{name}").STAGE
                if spec.name != name:
                    raise ValueError(f"builder.stages.{name} declares stage {spec.name!r}")
                specs[name] = spec
            self._specs = specs
        return self._specs

    def stage(self, name: str) -> StageSpec:
        return self._loaded()[name]

    def stages(self) -> list[StageSpec]:
        specs = self._loaded()
        return [specs[name] for name in STAGES]

    def get(self, stage: str, name: str) -> Impl:
        return self.stage(stage).get(name)

    def with_impl(self, impl: Impl) -> Registry:
        """A copy with `impl` added to (or replacing the same name in) its stage."""
        specs = dict(self._loaded())
        old = specs[impl.stage]
        impls = tuple(i for i in old.impls if i.name != impl.name) + (impl,)
        specs[impl.stage] = StageSpec(old.name, impls, old.parametric, old.parametric_help,
                                      old.parametric_samples)
        return Registry(specs)


_DEFAULT = Registry()
_current = _DEFAULT


def current() -> Registry:
    return _current


@contextlib.contextmanager
def using(registry: Registry) -> Iterator[Registry]:
    global _current
    before = _current
    _current = registry
    try:
        yield registry
    finally:
        _current = before
