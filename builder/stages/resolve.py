"""The `resolve` stage: the world -> install order (dependencies before dependants).

Interface: `resolve(world, packages, apk_arch) -> list[Package]`.
"""

from __future__ import annotations

from collections.abc import Callable

from builder.apk.model import Package


def resolve_reference(world: list[str], packages: list[Package], arch: str) -> list[Package]:
    from builder.resolve import resolve

    return resolve(world, packages, arch)


IMPLEMENTATIONS: dict[str, Callable[..., list[Package]]] = {"reference": resolve_reference}
