"""Every registered implementation: a complete record, the shape of its stage's protocol,
requirements that some implementation meets; every profile valid."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from builder.errors import ConfigError
from builder.spans import STAGES
from builder.stages import base
from builder.stages.profiles import PROFILES, check, parse_impl
from builder.stages.registry import current
from builder.stages.spec import CAPABILITIES, Impl
from tests.conformance.support import all_implementations, profile_for

PROTOCOLS: dict[str, Any] = {
    "config": base.ConfigLoader, "index": base.IndexLoader, "resolve": base.Resolver,
    "fetch": base.PackageFetcher, "expand": base.Expander, "install": base.Installer,
    "mutate": base.Mutator, "layer": base.LayerWriter, "compress": base.Compressor,
    "sbom": base.SbomWriter, "oci": base.OciWriter, "publish": base.ImagePublisher,
}
_OWN = {"__call__"}  # methods of a callable protocol


def _params(fn: Any) -> list[tuple[str, Any]]:
    sig = inspect.signature(fn)
    return [(p.name, p.kind) for p in sig.parameters.values() if p.name != "self"]


def _accepts(fn: Any, wanted: Any) -> None:
    """`fn` takes the protocol method's parameters, by name and kind, in order; any extra
    parameters it has must have defaults."""
    got = inspect.signature(fn).parameters
    want = _params(wanted)
    names = [n for n, _ in _params(fn)]
    assert names[:len(want)] == [n for n, _ in want], (names, want)
    for (name, kind), (_, got_kind) in zip(want, _params(fn), strict=False):
        assert got_kind == kind, f"{name}: {got_kind} instead of {kind}"
    for extra in list(got.values())[len(want) + (1 if "self" in got else 0):]:
        assert extra.default is not inspect.Parameter.empty, f"extra parameter {extra.name}"


def _members(proto: Any) -> tuple[list[str], list[str]]:
    """(attribute names, method names) a protocol declares."""
    attrs = list(getattr(proto, "__annotations__", {}))
    methods = [n for n, v in vars(proto).items()
               if callable(v) and not n.startswith("_") or n in _OWN and n in vars(proto)]
    return attrs, methods


def test_every_stage_has_a_protocol() -> None:
    assert set(PROTOCOLS) == set(STAGES)


def test_record_is_complete(any_impl: Impl) -> None:
    assert any_impl.stage in STAGES
    assert any_impl.name and not set(any_impl.name) & set(",= ")
    assert any_impl.help.strip()
    for other, capability in any_impl.requires.items():
        assert other in STAGES and other != any_impl.stage
        assert capability in CAPABILITIES
    assert set(any_impl.provides) <= set(CAPABILITIES)


def test_implements_its_protocol(any_impl: Impl) -> None:
    proto = PROTOCOLS[any_impl.stage]
    attrs, methods = _members(proto)
    for name in attrs:
        assert hasattr(any_impl.obj, name), f"{any_impl.stage}={any_impl.name}: no {name}"
    for name in methods:
        fn = getattr(any_impl.obj, name, None) if name != "__call__" else any_impl.obj
        assert callable(fn), f"{any_impl.stage}={any_impl.name}: no {name}()"
        _accepts(fn, getattr(proto, name))


def test_requirements_can_be_met(any_impl: Impl) -> None:
    chosen = profile_for(any_impl)  # raises when no implementation provides what it needs
    assert chosen[any_impl.stage] == any_impl.name


def test_requirement_not_met_is_refused_naming_both_stages() -> None:
    reg = current()
    needing = [i for i in all_implementations() if i.requires]
    assert needing  # the stitched layer needs the fast expand and install
    for impl in needing:
        for other, capability in impl.requires.items():
            for bad in (i for i in reg.stage(other).impls if capability not in i.provides):
                chosen = profile_for(impl)
                chosen[other] = bad.name
                with pytest.raises(ConfigError) as info:
                    check(chosen, reg)
                msg = str(info.value)
                assert f"{impl.stage}={impl.name}" in msg and f"{other}={bad.name}" in msg


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_profiles_are_valid(profile: str) -> None:
    chosen = parse_impl(profile)
    assert set(chosen) == set(STAGES)
    for stage, name in chosen.items():
        assert current().get(stage, name).stage == stage


def test_parametric_samples_resolve() -> None:
    for spec in current().stages():
        for name in spec.parametric_samples:
            assert spec.get(name).name == name
        assert bool(spec.parametric_samples) == bool(spec.parametric_help)
