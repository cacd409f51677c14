"""A pytest plugin for `test_suite_catches_breakage.py`: registers, in a temporary registry,
a compressor whose stream gives other bytes than its file path (level 1 in the sink, the
setting's own level in compress_file) — the kind of drift the suite exists to catch."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from builder.compress.gzip import GzipSetting
from builder.deflate.sink import GzipSink
from builder.stages.registry import current, using
from builder.stages.spec import Impl

_stack = contextlib.ExitStack()


class DriftingGzip(GzipSetting):
    def sink(self, out_path: Path) -> GzipSink:
        return GzipSink(out_path, self.engine, 1)


def pytest_configure(config: pytest.Config) -> None:
    broken = Impl("compress", "broken", DriftingGzip("broken", "zlib", 9),
                  "deliberately broken: stream and file disagree",
                  provides=frozenset({"deflate"}))
    _stack.enter_context(using(current().with_impl(broken)))


def pytest_unconfigure(config: pytest.Config) -> None:
    _stack.close()
