"""One build: the plan (config, index, resolve: builder/plan.py), then per arch fetch, expand,
install, mutate, layer, compress, oci (image JSON), sbom; then the index.

Each stage runs inside a span (builder/spans.py) and through the implementation `--impl`
chose (builder/stages/profiles.py), called through its stage's contract
(builder/stages/base.py) only. Everything is written under a temporary work directory;
`build()` returns paths inside it and the caller moves the output into place (so a failure
never leaves a partial output).
"""

from __future__ import annotations

import functools
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from builder.artefacts import ArchArtefacts, BuildResult, LayerArtefact
from builder.config import ImageConfig, build_repositories
from builder.errors import ConfigError, VerificationError
from builder.plan import ArchPlan, BuildOptions, BuildPlan, Planned, make_plan
from builder.spans import SpanRecorder
from builder.stages.base import (
    BlobResult,
    Compressor,
    Installer,
    LayerResult,
    LayerTarget,
    LayerWriter,
)
from builder.stages.profiles import check
from builder.stages.registry import Registry, current

if TYPE_CHECKING:
    from builder.expand.model import ExpandedPackage
    from builder.fs.model import FsModel
    from builder.install.rules import InstallState
    from builder.layercache import KnownBlobs, LayerCache
    from builder.layering import LayerPart
    from builder.repo.fetch import Fetcher


@dataclass
class BuildContext:
    opts: BuildOptions
    chosen: dict[str, str]  # stage -> implementation name
    registry: Registry
    work: Path
    rec: SpanRecorder
    fetcher: Fetcher
    planned: Planned
    layer_cache: LayerCache | None = None  # --layer-cache
    known_blobs: KnownBlobs | None = None  # files a layer-cache hit may link (build-many)

    def impl(self, stage: str) -> Any:
        """The chosen implementation object of `stage` (its stage's protocol)."""
        return self.registry.get(stage, self.chosen[stage]).obj


def _entrypoint(cfg: ImageConfig) -> list[str]:
    if cfg.entrypoint.shell_fragment:
        return ["/bin/sh", "-c", cfg.entrypoint.shell_fragment]
    if cfg.entrypoint.command:
        try:
            return shlex.split(cfg.entrypoint.command)
        except ValueError as exc:
            raise ConfigError(f"{cfg.source_file}: entrypoint.command: {exc}") from None
    return []


def build(opts: BuildOptions, work: Path, rec: SpanRecorder,
          known_blobs: KnownBlobs | None = None) -> BuildResult:
    """Run the pipeline; all output goes under `work`, except that a layer the layer cache
    holds may be a file of `known_blobs` (earlier outputs of this process) instead."""
    from builder.oci.image import build_index
    from builder.repo.fetch import Fetcher

    chosen = opts.chosen()
    registry = current()
    check(chosen, registry)
    with Fetcher(opts.cache_dir, offline=opts.offline, ca_file=opts.ca_file,
                 content_store=opts.content_store) as fetcher:
        fetcher.progress = rec.progress
        plan, planned = make_plan(opts, rec, fetcher)
        ctx = BuildContext(opts, chosen, registry, work, rec, fetcher, planned,
                           known_blobs=known_blobs)
        if opts.layer_cache:
            from builder.layercache import LayerCache

            ctx.layer_cache = LayerCache(fetcher.cache, opts.content_store)
        archs = [build_arch(plan, arch, ctx) for arch in plan.archs]
    cfg = planned.cfg
    index_created = max(a.created for a in archs)
    with rec.span("oci", impl=chosen["oci"]) as s:
        index = build_index([a.image for a in archs], dict(cfg.annotations), index_created,
                            cfg.vcs_url)
        s.bytes_out = index.size
    result = BuildResult(cfg, archs, index, chosen,
                         [a.sbom_path for a in archs if a.sbom_path is not None])
    if opts.sbom:
        from builder.oci.sbom import index_sbom

        with rec.span("sbom", impl=chosen["sbom"]) as s:
            idx = work / "sbom-index.spdx.json"
            idx.write_bytes(index_sbom(
                repo=opts.tag, index_digest=index.digest, created=index_created,
                images=[(a.apk_arch, a.image.manifest.digest) for a in archs]))
            s.bytes_out = idx.stat().st_size
            result.sboms.append(idx)
    return result


def build_arch(plan: BuildPlan, arch: ArchPlan, ctx: BuildContext) -> ArchArtefacts:
    """Fetch, expand, install, mutate, layer, compress, image JSON and SBOM of one arch."""
    from builder.install.apkdb import init_db
    from builder.install.rules import InstallState
    from builder.mutate import MutateContext
    from builder.oci.image import Descriptor, ImageSpec, build_image

    chosen, rec, cfg = ctx.chosen, ctx.rec, ctx.planned.cfg
    aarch = arch.apk_arch
    adir = ctx.work / aarch
    adir.mkdir(parents=True, exist_ok=True)
    ordered = ctx.planned.packages[aarch]
    pinned = arch.pinned

    with rec.span("fetch", aarch, impl=chosen["fetch"]) as s:
        rec.progress.expect(len(ordered), sum(p.size for p in ordered))
        paths = ctx.impl("fetch")(ordered, aarch, ctx.fetcher, None)
        if aarch in ctx.planned.locked:
            _verify_locked(ctx, aarch, paths)
        s.bytes_out = fetched = sum(p.stat().st_size for p in paths.values())
        s.attrs.update(ctx.fetcher.stats.as_dict())
    writer: LayerWriter = ctx.impl("layer")
    if layered(cfg) and not writer.writes_parts:
        raise ConfigError(f"{cfg.source_file}: layering: the {chosen['layer']} layer writer "
                          f"({writer.layer_format} format) makes one layer of the whole image; "
                          "layered images are built by --impl reference or fast")
    with rec.span("expand", aarch, impl=chosen["expand"]) as s:
        s.bytes_in = fetched
        s.attrs["block_index"] = writer.needs_block_index
        expanded_by_name = ctx.impl("expand")(
            {p.name: paths[p.name] for p in ordered}, adir / "expand",
            cache=ctx.fetcher.cache, block_index=writer.needs_block_index)
        expanded = [expanded_by_name[p.name] for p in ordered]
        s.attrs["cache_hits"] = sum(1 for e in expanded if e.from_cache)
        s.bytes_out = sum(e.data_size for e in expanded)
    installer: Installer = ctx.impl("install")
    fs = installer.new_filesystem(adir / "root")
    with rec.span("install", aarch, impl=chosen["install"]) as s:
        init_db(fs, aarch, ctx.planned.keys, build_repositories(cfg), pinned)
        state = InstallState(fs, aarch, plan.options_epoch)
        installer.install(state, expanded)
        s.bytes_in = state.bytes_in
    with rec.span("mutate", aarch, impl=chosen["mutate"]):
        mres = ctx.impl("mutate")(fs, MutateContext(cfg, arch.arch, pinned))

    compressor: Compressor = ctx.impl("compress")
    layers = []
    for i, part in enumerate(_layer_parts(cfg, fs, expanded, state)):
        lres, blob = _layer(writer, compressor, fs, expanded, adir, aarch, ctx, part, i)
        layers.append(LayerArtefact(lres.diff_id, blob.digest, blob.size,
                                    compressor.media_type, blob.path))

    newest = max((e.package.build_time for e in expanded), default=0)
    sde = plan.source_date_epoch
    created = sde if sde is not None else max(plan.build_date, newest)
    with rec.span("oci", aarch, impl=chosen["oci"]):
        image = build_image(ImageSpec(
            arch=aarch, diff_ids=[la.diff_id for la in layers],
            layers=[Descriptor(la.digest, la.size, la.media_type) for la in layers],
            created=created, entrypoint=_entrypoint(cfg),
            cmd=shlex.split(cfg.cmd) if cfg.cmd else [], env=dict(cfg.environment),
            workdir=cfg.work_dir, user=mres.user, stop_signal=cfg.stop_signal,
            volumes=list(cfg.volumes), annotations=dict(cfg.annotations),
            vcs_url=cfg.vcs_url))
    result = ArchArtefacts(arch.arch, aarch, [e.package for e in expanded], created, layers,
                           mres.user, image)
    if ctx.opts.sbom:
        with rec.span("sbom", aarch, impl=chosen["sbom"]) as s:
            result.sbom_path = ctx.impl("sbom")(result, fs, adir, ctx.opts.tag)
            s.bytes_out = result.sbom_path.stat().st_size
    return result


def _verify_locked(ctx: BuildContext, aarch: str, paths: dict[str, Path]) -> None:
    """--lockfile: each package's signature section too (the fetch stage checked the rest
    against the lock-made record: size, control SHA-1, data SHA-256), and its signature."""
    from builder.apk.signing import Keyring
    from builder.lock import verify_locked_file

    keyring = Keyring()
    for name, pem in ctx.planned.keys:
        keyring.add(name, pem, name)
    memo = ctx.fetcher.cache.base / "signature-verified"
    for lp in ctx.planned.locked[aarch]:
        try:
            verify_locked_file(lp, paths[lp.name], keyring, ctx.opts.allow_untrusted, memo)
        except VerificationError as exc:
            if not paths[lp.name].is_relative_to(ctx.fetcher.cache.root):
                raise  # a local repository's file: nothing to fetch again
            # The cached copy passed the fetch stage's checks but not the lock's (a damaged
            # signature section): fetched again (offline: an error naming it), checked again.
            from builder.repo.repository import Repository
            from builder.repo.verify import verify_package_fast

            pkg = next(p for p in ctx.planned.packages[aarch] if p.name == lp.name)
            paths[lp.name] = ctx.fetcher.refetch_package(
                Repository(url=pkg.repository, tag=pkg.repository_tag), pkg, aarch,
                functools.partial(verify_package_fast, pkg=pkg, cache=ctx.fetcher.cache),
                str(exc))
            verify_locked_file(lp, paths[lp.name], keyring, ctx.opts.allow_untrusted, memo)


def layered(cfg: ImageConfig) -> bool:
    return cfg.layering is not None and cfg.layering.active


def _layer_parts(cfg: ImageConfig, fs: FsModel, expanded: list[ExpandedPackage],
                 state: InstallState) -> list[LayerPart | None]:
    """What each layer holds, bottom first: [None] (the whole tree) for one layer, else each
    package layer and the top layer (builder/layering.py)."""
    if not layered(cfg):
        return [None]
    from builder.layer.tarmap import layer_walk
    from builder.layering import group_by_origin, layer_parts

    assert cfg.layering is not None
    groups = group_by_origin([e.package for e in expanded], cfg.layering.budget)
    return list(layer_parts(layer_walk(fs), groups, state.records))


def _layer(writer: LayerWriter, compressor: Compressor, fs: FsModel,
           expanded: list[ExpandedPackage], adir: Path, aarch: str, ctx: BuildContext,
           part: LayerPart | None, index: int) -> tuple[LayerResult, BlobResult]:
    """Layer `index` from the layer cache when it holds it (a `layer` span for the key and
    the lookup, a `compress` span doing nothing, both `layer_cache=hit` and 0 bytes made),
    else written and compressed (`_layer_and_blob`) and then recorded there."""
    if ctx.layer_cache is None:
        return _layer_and_blob(writer, compressor, fs, expanded, adir, aarch, ctx, part, index)
    from builder.layercache import CachedLayer, layer_key

    rec, chosen = ctx.rec, ctx.chosen
    name = "layer" if part is None else f"layer-{index}"
    blob_path = adir / f"{name}.tar{compressor.suffix}"
    settings = compressor.settings()
    where = {} if part is None else {"layer": index}
    with rec.span("layer", aarch, impl=chosen["layer"], output="cache", **where) as s:
        key = layer_key(fs, expanded, part, f"{chosen['layer']}/{writer.layer_format}",
                        compressor.name, settings)
        found = ctx.layer_cache.get(key, blob_path, ctx.known_blobs)
        s.attrs.update(layer_cache="hit" if found else "miss", layer_key=key)
        if found:
            s.attrs.update(entries=found[0].entries, reused_tar_bytes=found[0].tar_size,
                           linked=found[1] != blob_path)
    if found is None:
        try:
            lres, blob = _layer_and_blob(writer, compressor, fs, expanded, adir, aarch, ctx,
                                         part, index)
            ctx.layer_cache.put(CachedLayer(key, lres.diff_id, blob.digest, blob.size,
                                            compressor.media_type, lres.size, lres.entries),
                                blob.path)
        finally:
            ctx.layer_cache.release(key)  # a claim on the key (fan-out) ends with the build
        return lres, blob
    hit, blob_path = found
    with rec.span("compress", aarch, impl=chosen["compress"], output="cache",
                  layer_cache="hit", reused_blob_bytes=hit.size, **settings, **where):
        pass
    return (LayerResult(None, hit.diff_id, hit.tar_size, hit.entries),
            BlobResult(blob_path, hit.digest, hit.size, hit.tar_size))


def _layer_and_blob(writer: LayerWriter, compressor: Compressor, fs: FsModel,
                    expanded: list[ExpandedPackage], adir: Path, aarch: str,
                    ctx: BuildContext, part: LayerPart | None = None,
                    index: int = 0) -> tuple[LayerResult, BlobResult]:
    """The layer and compress spans of layer `index` (the whole tree when `part` is None),
    shaped by the writer's output kind."""
    rec, chosen = ctx.rec, ctx.chosen
    name = "layer" if part is None else f"layer-{index}"
    blob_path = adir / f"{name}.tar{compressor.suffix}"
    settings = compressor.settings()
    where = {} if part is None else {"layer": index}
    if writer.output == "blob":
        # The writer makes the blob from the packages' own compressed bytes: the layer span
        # covers it all; the compress span records what the compressor's engine redid.
        with rec.span("layer", aarch, impl=chosen["layer"], output="blob", **where) as s:
            lres = writer.write(fs, expanded, LayerTarget(path=blob_path,
                                                          compressor=compressor,
                                                          part=part))
            s.bytes_out = lres.size
            s.attrs.update(entries=lres.entries, **lres.attrs)
        assert lres.blob is not None
        with rec.span("compress", aarch, impl=chosen["compress"], output="blob",
                      **{**settings, **lres.blob_attrs, **where}) as s:
            s.bytes_in, s.bytes_out = lres.size, lres.blob.size
        return lres, lres.blob
    if writer.output == "stream":
        # The tar streams into the compressor's workers: compression overlaps tar
        # generation (accounted in the layer span; the compress span is the drain after the
        # last byte) and no uncompressed layer file is written.
        sink = compressor.sink(blob_path)
        with sink:
            with rec.span("layer", aarch, impl=chosen["layer"], output="stream",
                          **where) as s:
                lres = writer.write(fs, expanded, LayerTarget(sink=sink, part=part))
                s.bytes_out = lres.size
                s.attrs.update(entries=lres.entries, **lres.attrs)
            with rec.span("compress", aarch, impl=chosen["compress"], output="stream",
                          **settings, **where) as s:
                blob = sink.close()
                s.bytes_in, s.bytes_out = blob.size_in, blob.size
        return lres, blob
    with rec.span("layer", aarch, impl=chosen["layer"], output="file", **where) as s:
        lres = writer.write(fs, expanded, LayerTarget(path=adir / f"{name}.tar",
                                                      part=part))
        s.bytes_out = lres.size
        s.attrs.update(entries=lres.entries, **lres.attrs)
    assert lres.path is not None
    with rec.span("compress", aarch, impl=chosen["compress"], output="file",
                  **settings, **where) as s:
        blob = compressor.compress_file(lres.path, blob_path)
        s.bytes_in, s.bytes_out = lres.size, blob.size
    return lres, blob
