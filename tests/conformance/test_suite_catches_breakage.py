"""The suite tests what is registered: a deliberately broken compressor, registered in a
temporary registry, makes it fail — and only on that compressor."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT


@pytest.mark.slow
def test_a_broken_compressor_fails_the_suite() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
         "-p", "tests.conformance.broken", "tests/conformance/test_compress.py",
         "tests/conformance/test_contracts.py"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    failed = re.findall(r"^FAILED (\S+)", out, re.M)
    assert failed and all("compress=broken" in f for f in failed), failed
    assert any("test_file_and_stream_give_the_same_bytes" in f for f in failed)
    # Every other implementation still passed in that run.
    assert re.search(r"\d+ passed", out)
