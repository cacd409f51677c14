"""Shared test fixtures: paths to the real data in ../shared/apk-fixtures."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = REPO_ROOT.parent / "shared" / "apk-fixtures"
KEYS = FIXTURES / "keys"
GOLDEN = FIXTURES / "apko-golden"


@pytest.fixture(scope="session")
def fixtures() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"fixtures not found at {FIXTURES} (../shared/apk-fixtures)")
    return FIXTURES


@pytest.fixture(scope="session")
def signing_key() -> tuple[bytes, bytes]:
    """A generated RSA key pair (private PEM, public PEM) for repositories built in tests."""
    from builder.apk.signing import generate_key

    return generate_key(2048)


def require_tool(*names: str) -> None:
    """Skip the calling test when a Debian tool is not installed (make test installs them)."""
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        pytest.skip(f"missing tools: {', '.join(missing)} (run `make tools` as root)")
