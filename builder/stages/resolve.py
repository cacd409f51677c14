"""The `resolve` stage: the world -> install order, dependencies before dependants
(builder/resolve.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from builder.stages.spec import Impl, StageSpec

if TYPE_CHECKING:
    from builder.apk.model import Package


def resolve_reference(world: list[str], packages: list[Package], apk_arch: str
                      ) -> list[Package]:
    from builder.resolve import resolve

    return resolve(world, packages, apk_arch)


STAGE = StageSpec("resolve", (
    Impl("resolve", "reference", resolve_reference,
         "apk-tools' solver rules (providers, priorities, pins, install_if)"),
))
