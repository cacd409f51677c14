"""The conformance suite: every implementation in the registry is held to its stage's
contract, so a new implementation is tested by being registered.

A test asks for `<stage>_impl` (e.g. `compress_impl`) and runs once per registered
implementation of that stage (and per sampled parametric form), or for `any_impl` and runs
once per implementation of every stage."""

from __future__ import annotations

import pytest

from builder.spans import STAGES
from tests.conformance.support import GoldenBuilds, all_implementations, impl_id, implementations


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    for stage in STAGES:
        arg = f"{stage}_impl"
        if arg in metafunc.fixturenames:
            found = implementations(stage)
            metafunc.parametrize(arg, found, ids=[impl_id(i) for i in found])
    if "any_impl" in metafunc.fixturenames:
        found = all_implementations()
        metafunc.parametrize("any_impl", found, ids=[impl_id(i) for i in found])


@pytest.fixture(scope="session")
def golden_builds(tmp_path_factory: pytest.TempPathFactory) -> GoldenBuilds:
    return GoldenBuilds(tmp_path_factory.mktemp("conformance-golden"))
