"""The `layer` stage: the image filesystem model -> the layer tar and its diffID, as the
writer's `output` says (builder/stages/base.py `LayerWriter`).

- `reference` (output "file"): the sorted layer (builder/layer/sorted.py) through a
  TarWriter, file bytes read through the model, to a tar file the compressor then reads;
- `fast` (output "stream"): the same bytes assembled block by block and streamed into the
  compressor's sink (compression overlaps tar generation, no tar file is written);
- `stitched` (output "blob"): another layer format, package-ordered and built from the
  packages' own DEFLATE blocks (builder/layer/stitched.py): the writer makes the compressed
  blob itself, using the chosen compressor's DEFLATE engine only for the bytes it cannot
  reuse. Same tree once unpacked, other bytes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from builder.stages.spec import Impl, StageSpec

if TYPE_CHECKING:
    from builder.expand.model import ExpandedPackage
    from builder.fs.model import FsModel
    from builder.stages.base import LayerOutput, LayerResult, LayerTarget


class SortedReference:
    output: LayerOutput = "file"
    layer_format = "sorted"
    needs_block_index = False
    writes_parts = True

    def write(self, fs: FsModel, packages: list[ExpandedPackage],
              target: LayerTarget) -> LayerResult:
        from builder.layer.sorted import write_sorted_reference

        assert target.path is not None
        return write_sorted_reference(fs, target.path,
                                      target.part.entries if target.part else None)


class SortedFast:
    output: LayerOutput = "stream"
    layer_format = "sorted"
    needs_block_index = False
    writes_parts = True

    def write(self, fs: FsModel, packages: list[ExpandedPackage],
              target: LayerTarget) -> LayerResult:
        from builder.layer.sorted import write_sorted_fast

        return write_sorted_fast(fs, None, sink=target.sink,
                                 entries=target.part.entries if target.part else None)


class Stitched:
    output: LayerOutput = "blob"
    layer_format = "stitched"
    needs_block_index = True
    writes_parts = True

    def write(self, fs: FsModel, packages: list[ExpandedPackage],
              target: LayerTarget) -> LayerResult:
        from builder.layer.stitched import stitch_layer, stitch_part
        from builder.layer.tarmap import image_names
        from builder.stages.base import BlobResult, LayerResult

        assert target.path is not None and target.compressor is not None
        engine_level = target.compressor.deflate_engine
        assert engine_level is not None  # profiles.check() refuses a non-DEFLATE compressor
        engine, level = engine_level
        users, groups = image_names(fs, "etc/passwd"), image_names(fs, "etc/group")
        if target.part is None:
            res = stitch_layer(fs, packages, target.path, users, groups, engine, level)
        else:
            res = stitch_part(fs, packages, target.part, target.path, users, groups, engine,
                              level)
        st = res.stats
        return LayerResult(
            None, res.diff_id, res.size,
            st.entries_kept + st.entries_rewritten + st.final_entries,
            blob=BlobResult(target.path, res.digest, res.blob_size, res.size),
            attrs={"entries_kept": st.entries_kept, "entries_rewritten": st.entries_rewritten,
                   "entries_cut": st.entries_cut, "final_entries": st.final_entries},
            blob_attrs={"compressor": f"stitched+{engine}:{level}",
                        "reused_bytes": res.reused_bytes,
                        "recompressed_in": res.recompressed_in,
                        "recompressed_out": res.recompressed_out})


STAGE = StageSpec("layer", (
    Impl("layer", "reference", SortedReference(),
         "apko's sorted layer, written to a tar file, then compressed"),
    Impl("layer", "fast", SortedFast(),
         "the same bytes, streamed block by block into the compressor"),
    Impl("layer", "stitched", Stitched(),
         "package-ordered layer stitched from the packages' own DEFLATE blocks",
         requires={"expand": "stitchable", "install": "package-extents",
                   "compress": "deflate"}),
))
