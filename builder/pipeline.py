"""One build: config -> (per arch) index, resolve, fetch, expand, install, mutate, layer,
compress, sbom -> oci. Each stage runs inside a span (builder/spans.py) and through the
implementation chosen by `--impl` (builder/impl.py).

Image time (apko-notes §1.1): `SOURCE_DATE_EPOCH` if set, else max(--build-date (default
epoch 0), newest package builddate). scripts.tar entries get the options' epoch
(`SOURCE_DATE_EPOCH`, else --build-date, else 0), not the image time.

Everything is written under a temporary work directory; `build()` returns paths inside it
and the caller moves the output into place (so a failure never leaves a partial output).
"""

from __future__ import annotations

import datetime as dt
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder import impl
from builder.apk.model import Package
from builder.config import (
    ImageConfig,
    apk_arch,
    build_repositories,
    parse_arch,
)
from builder.errors import ConfigError, FetchError
from builder.spans import SpanRecorder


@dataclass
class BuildOptions:
    config: str
    tag: str = ""
    archs: list[str] = field(default_factory=list)
    keyring_append: list[str] = field(default_factory=list)
    repository_append: list[str] = field(default_factory=list)
    build_repository_append: list[str] = field(default_factory=list)
    package_append: list[str] = field(default_factory=list)
    annotations: list[str] = field(default_factory=list)
    build_date: str = ""
    offline: bool = False
    cache_dir: str | None = None
    sbom: bool = True
    workdir: str | None = None
    ca_file: str | None = None
    allow_untrusted: bool = False
    impl: dict[str, str] = field(default_factory=lambda: impl.parse_impl("reference"))


@dataclass
class ArchResult:
    arch: str  # OCI name
    apk_arch: str
    packages: list[Package]
    created: int
    diff_id: str
    layer_digest: str
    layer_size: int
    user: str
    sbom_path: Path | None = None
    image: Any = None  # builder.oci.image.BuiltImage


@dataclass
class BuildResult:
    config: ImageConfig
    archs: list[ArchResult]
    index: Any  # builder.oci.image.Blob
    images: list[Any]
    layers: dict[str, Path]  # layer digest -> compressed blob path
    sboms: list[Path]

    def summary(self, impls: dict[str, str]) -> dict[str, Any]:
        """The "image" object of `--spans`/`--json`."""
        impls = dict(impls)
        if impls.get("layer") == "stitched":  # the compress stage's choice goes unused
            impls["compress"] = "stitched"
        return {
            "index_digest": self.index.digest,
            "manifests": {
                a.arch: {
                    "digest": a.image.manifest.digest,
                    "config_digest": a.image.config.digest,
                    "diff_ids": [a.diff_id],
                    "layer_digest": a.layer_digest,
                    "layer_size": a.layer_size,
                } for a in self.archs
            },
            "impl": impls,
        }


def parse_build_date(text: str) -> int:
    """RFC3339 -> epoch seconds."""
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--build-date: not an RFC3339 time: {text!r}") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return int(t.timestamp())


def source_date_epoch() -> int | None:
    raw = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not raw:
        return None
    if not raw.isdigit():
        raise ConfigError(f"SOURCE_DATE_EPOCH: expected integer seconds, got {raw!r}")
    return int(raw)


def _entrypoint(cfg: ImageConfig) -> list[str]:
    if cfg.entrypoint.shell_fragment:
        return ["/bin/sh", "-c", cfg.entrypoint.shell_fragment]
    if cfg.entrypoint.command:
        try:
            return shlex.split(cfg.entrypoint.command)
        except ValueError as exc:
            raise ConfigError(f"{cfg.source_file}: entrypoint.command: {exc}") from None
    return []


def _keys(cfg: ImageConfig) -> list[tuple[str, bytes]]:
    """(file name in /etc/apk/keys, PEM) for each keyring entry (local paths or URLs)."""
    out = []
    for ref in cfg.contents.keyring:
        name = ref.rstrip("/").rsplit("/", 1)[-1]
        where = cfg.resolve_local(ref)
        if "://" in where:
            raise FetchError(f"keyring {ref}: remote keys are not supported by the reference "
                             "builder; download the key and give its path")
        try:
            out.append((name, Path(where).read_bytes()))
        except OSError as exc:
            raise ConfigError(f"keyring {ref}: cannot read {where}: "
                              f"{exc.strerror or exc}") from None
    return out


def _pinned(packages: list[Package]) -> list[str]:
    return sorted(f"{p.name}={p.version}" for p in packages)


def build(opts: BuildOptions, work: Path, rec: SpanRecorder) -> BuildResult:
    """Run the pipeline; all output goes under `work`."""
    from builder.apk.signing import Keyring
    from builder.oci.image import build_index
    from builder.repo.fetch import Fetcher
    from builder.repo.repository import parse_repository

    chosen = opts.impl
    with rec.span("config", impl=chosen["config"]) as s:
        overrides = dict(archs=opts.archs, keyring_append=opts.keyring_append,
                         repository_append=opts.repository_append,
                         build_repository_append=opts.build_repository_append,
                         package_append=opts.package_append, annotations=opts.annotations)
        cfg: ImageConfig = impl.get("config", chosen["config"])(
            opts.config, opts.workdir, overrides)
        s.bytes_in = Path(opts.config).stat().st_size
    sde = source_date_epoch()
    build_date = parse_build_date(opts.build_date) if opts.build_date else 0
    options_epoch = sde if sde is not None else build_date
    keys = _keys(cfg)
    keyring = Keyring()
    for name, pem in keys:
        keyring.add(name, pem, name)
    repos = [parse_repository(cfg.resolve_local(r) if not r.startswith("@") else
                              r.split(None, 1)[0] + " " + cfg.resolve_local(r.split(None, 1)[1]),
                              "repositories")
             for r in build_repositories(cfg)]
    if not repos:
        raise ConfigError(f"{cfg.source_file}: contents.repositories: no repository given")
    world = list(cfg.contents.packages)
    if not world:
        raise ConfigError(f"{cfg.source_file}: contents.packages: no package given")

    results: list[ArchResult] = []
    layers: dict[str, Path] = {}
    with Fetcher(opts.cache_dir, offline=opts.offline, ca_file=opts.ca_file) as fetcher:
        for arch in cfg.archs:
            results.append(_build_arch(opts, cfg, arch, work, rec, fetcher, keyring, keys,
                                       repos, world, sde, build_date, options_epoch, layers))

    images = [r.image for r in results]
    index_created = max(r.created for r in results)
    index = build_index(images, dict(cfg.annotations), index_created, cfg.vcs_url)
    sboms = [r.sbom_path for r in results if r.sbom_path is not None]
    if opts.sbom:
        from builder.oci.sbom import index_sbom

        with rec.span("sbom", impl=chosen["sbom"]) as s:
            idx = work / "sbom-index.spdx.json"
            idx.write_bytes(index_sbom(
                repo=opts.tag, index_digest=index.digest, created=index_created,
                images=[(r.apk_arch, r.image.manifest.digest) for r in results]))
            s.bytes_out = idx.stat().st_size
            sboms.append(idx)
    return BuildResult(cfg, results, index, images, layers, sboms)


def _build_arch(opts: BuildOptions, cfg: ImageConfig, arch: str, work: Path,
                rec: SpanRecorder, fetcher: Any, keyring: Any, keys: list[tuple[str, bytes]],
                repos: list[Any], world: list[str], sde: int | None, build_date: int,
                options_epoch: int, layers: dict[str, Path]) -> ArchResult:
    from builder.oci.image import Descriptor, ImageSpec, build_image
    from builder.stages.compress import CompressResult
    from builder.stages.install import InstallState, init_db, new_filesystem
    from builder.stages.mutate import MutateContext

    chosen = opts.impl
    arch = parse_arch(arch)
    aarch = apk_arch(arch)
    adir = work / aarch
    adir.mkdir(parents=True, exist_ok=True)

    with rec.span("index", aarch, impl=chosen["index"]) as s:
        available = impl.get("index", chosen["index"])(
            repos, aarch, keyring, fetcher, opts.allow_untrusted)
        s.attrs["packages"] = len(available)
    with rec.span("resolve", aarch, impl=chosen["resolve"]) as s:
        resolve = impl.get("resolve", chosen["resolve"])
        first = resolve(world, available, aarch)
        pinned = _pinned(first)
        # apko locks the world to exact versions, then installs in the order the pinned world
        # resolves to.
        ordered = resolve(pinned, available, aarch)
        s.attrs["packages"] = len(ordered)
    with rec.span("fetch", aarch, impl=chosen["fetch"]) as s:
        paths = impl.get("fetch", chosen["fetch"])(ordered, aarch, fetcher, None)
        s.bytes_out = fetched = sum(p.stat().st_size for p in paths.values())
        s.attrs.update(fetcher.stats.as_dict())
    make_layer = impl.get("layer", chosen["layer"])
    with rec.span("expand", aarch, impl=chosen["expand"]) as s:
        s.bytes_in = fetched
        # A layer built from the packages' own DEFLATE blocks (stitched) reads each data
        # section's block index: made during expand.
        block_index = getattr(make_layer, "fused", False)
        s.attrs["block_index"] = block_index
        expanded = impl.get("expand", chosen["expand"])(
            {p.name: paths[p.name] for p in ordered}, adir / "expand", cache=fetcher.cache,
            block_index=block_index)
        s.attrs["cache_hits"] = sum(1 for e in expanded.values()
                                    if getattr(e, "from_cache", False))
        s.bytes_out = sum(e.data_size for e in expanded.values())
    # The install implementation decides the filesystem model (on disk or in memory);
    # mutate, layer and sbom work on either through the FsModel interface.
    fs = new_filesystem(chosen["install"], adir / "root")
    with rec.span("install", aarch, impl=chosen["install"]) as s:
        init_db(fs, aarch, keys, build_repositories(cfg), pinned)
        state = InstallState(fs, aarch, options_epoch)
        impl.get("install", chosen["install"])(state, [expanded[p.name] for p in ordered])
        s.bytes_in = state.bytes_in
    with rec.span("mutate", aarch, impl=chosen["mutate"]):
        mres = impl.get("mutate", chosen["mutate"])(fs, MutateContext(cfg, arch, pinned))
    compressor = impl.get("compress", chosen["compress"])
    settings = getattr(compressor, "settings", dict)()
    if getattr(make_layer, "fused", False):
        # The stitched format writes the blob from the packages' own DEFLATE blocks: the
        # layer span covers it all; the compress span only records what was re-compressed.
        with rec.span("layer", aarch, impl=chosen["layer"], fused=True) as s:
            lres, st = make_layer(fs, adir / "layer.tar.gz",
                                  packages=[expanded[p.name] for p in ordered])
            s.bytes_out = lres.size
            s.attrs.update(entries=lres.entries, entries_kept=st.stats.entries_kept,
                           entries_rewritten=st.stats.entries_rewritten,
                           entries_cut=st.stats.entries_cut,
                           final_entries=st.stats.final_entries)
        from builder.stages.layer import STITCH_ENGINE, STITCH_LEVEL

        with rec.span("compress", aarch, impl="stitched", fused=True,
                      compressor=f"stitched+{STITCH_ENGINE}:{STITCH_LEVEL}") as s:
            s.bytes_in, s.bytes_out = lres.size, st.blob_size
            s.attrs.update(reused_bytes=st.reused_bytes, recompressed_in=st.recompressed_in,
                           recompressed_out=st.recompressed_out)
        cres = CompressResult(adir / "layer.tar.gz", st.digest, st.blob_size)
    elif getattr(make_layer, "streams", False) and hasattr(compressor, "sink"):
        # The layer streams its tar into the compressor's worker threads: compression
        # overlaps tar generation (accounted in the layer span; the compress span is the
        # drain after the last byte) and no uncompressed layer file is written.
        sink = compressor.sink(adir / "layer.tar.gz")
        with sink:
            with rec.span("layer", aarch, impl=chosen["layer"], streamed=True) as s:
                lres = make_layer(fs, None, sink=sink)
                s.bytes_out = lres.size
                s.attrs["entries"] = lres.entries
            with rec.span("compress", aarch, impl=chosen["compress"], streamed=True,
                          **settings) as s:
                sres = sink.close()
                s.bytes_in, s.bytes_out = sres.size_in, sres.size
        cres = CompressResult(sres.path, sres.digest, sres.size)
    else:
        with rec.span("layer", aarch, impl=chosen["layer"]) as s:
            lres = make_layer(fs, adir / "layer.tar")
            s.bytes_out = lres.size
            s.attrs["entries"] = lres.entries
        with rec.span("compress", aarch, impl=chosen["compress"], **settings) as s:
            cres = compressor(lres.path, adir / "layer.tar.gz")
            s.bytes_in, s.bytes_out = lres.size, cres.size
    layers[cres.digest] = cres.path
    newest = max((e.package.build_time for e in expanded.values()), default=0)
    created = sde if sde is not None else max(build_date, newest)
    result = ArchResult(arch, aarch, [expanded[p.name].package for p in ordered], created,
                        lres.diff_id, cres.digest, cres.size, mres.user)
    spec = ImageSpec(
        arch=aarch, diff_ids=[lres.diff_id], layers=[Descriptor(cres.digest, cres.size)],
        created=created, entrypoint=_entrypoint(cfg),
        cmd=shlex.split(cfg.cmd) if cfg.cmd else [], env=dict(cfg.environment),
        workdir=cfg.work_dir, user=mres.user, stop_signal=cfg.stop_signal,
        volumes=list(cfg.volumes), annotations=dict(cfg.annotations), vcs_url=cfg.vcs_url)
    result.image = build_image(spec)
    if opts.sbom:
        with rec.span("sbom", aarch, impl=chosen["sbom"]) as s:
            result.sbom_path = impl.get("sbom", chosen["sbom"])(result, fs, adir, opts.tag)
            s.bytes_out = result.sbom_path.stat().st_size
    return result
