"""The `compress` stage: the layer tar -> the layer blob and its digest (the layer digest).

Every implementation is a `Compressor` (builder/stages/base.py): a finished tar file in
(`compress_file`) or a stream (`sink`, which a streaming layer writes into while it is being
generated), the same bytes either way. Its `settings()` go into the compress span's
attributes — and from there into the run record — never into the image config.

`reference` = zlib at level 6 (zlib's own default); `zlib:N`, `isal:N` (one serial stream);
`isal-mt` (`isal-mt:N`) = ISA-L in independent 1 MiB blocks with a 32 KiB preset dictionary,
on all CPUs; `zstd:N` = a `tar+zstd` layer. All of builder/compress/.
"""

from __future__ import annotations

from builder.compress.gzip import MT_BLOCK_SIZE, MT_LEVEL, GzipSetting, cpu_threads, parse_gzip
from builder.compress.zstd import parse_zstd
from builder.stages.spec import Impl, StageSpec

_DEFLATE = frozenset({"deflate"})


def _impl(setting: GzipSetting, help_text: str) -> Impl:
    return Impl("compress", setting.name, setting, help_text, provides=_DEFLATE)


def parametric(name: str) -> Impl | None:
    """`zlib:N`, `isal:N`, `isal-mt:N`, `zstd:N` -> an Impl for that setting; None otherwise."""
    gz = parse_gzip(name)
    if gz is not None:
        return _impl(gz, f"{gz.engine} level {gz.level}")
    zs = parse_zstd(name)
    if zs is not None:
        return Impl("compress", name, zs, f"zstd level {zs.level} (a tar+zstd layer)")
    return None


STAGE = StageSpec(
    "compress",
    (
        _impl(GzipSetting("reference", "zlib", 6), "stdlib zlib, level 6 (zlib:6)"),
        _impl(GzipSetting("isal-mt", "isal", MT_LEVEL, block_size=MT_BLOCK_SIZE,
                          threads=cpu_threads()),
              "ISA-L level 1 in 1 MiB blocks on all CPUs (isal-mt:1)"),
    ),
    parametric=parametric,
    parametric_help=("zlib:N (N = 0..9; reference = zlib:6)", "isal:N (N = 0..3)",
                     "isal-mt:N (N = 0..3; isal-mt = isal-mt:1)", "zstd:N (N = 1..19)"),
    parametric_samples=("zlib:1", "zlib:9", "isal:0", "isal:2", "isal-mt:3", "zstd:3"),
)
