"""The build plan: everything that decides the image, settled before any package is fetched.

`make_plan` runs the `config`, `index` and `resolve` stages and returns a `BuildPlan` —
frozen and JSON-serialisable: per arch the pinned packages in install order (with checksum,
repository, size, origin), the epochs, the digests of the trusted keys — plus the live
objects later stages work from (`Planned`: the parsed config, the key bytes, the resolved
index records). `apkimage resolve` prints the plan's install order, so it is the order the
build uses.

Image time (apko-notes §1.1): `SOURCE_DATE_EPOCH` if set, else max(--build-date (default
epoch 0), newest package builddate). scripts.tar entries get the options' epoch
(`SOURCE_DATE_EPOCH`, else --build-date, else 0), not the image time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from builder.apk.model import Package
from builder.apk.version import is_valid_version, parse_constraint
from builder.archs import apk_arch, oci_arch
from builder.config import ImageConfig, build_repositories
from builder.errors import ConfigError, FetchError, FormatError
from builder.spans import SpanRecorder
from builder.stages.registry import current

if TYPE_CHECKING:
    from builder.lock import LockedPackage
    from builder.repo.fetch import Fetcher

log = logging.getLogger(__name__)


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
    lockfile: str = ""  # apko's lockfile: install exactly its packages, no index, no solve
    layer_cache: bool = False  # reuse finished layers from the cache (builder/layercache.py)
    content_store: str = ""  # REGISTRY/REPO: layers' and packages' shared tier (fan-out)
    impl: dict[str, str] = field(default_factory=dict)  # stage -> name; {} = reference

    def chosen(self) -> dict[str, str]:
        """Every stage's implementation name (a stage not in `impl` runs its reference)."""
        from builder.spans import STAGES

        return {stage: self.impl.get(stage, "reference") for stage in STAGES}


@dataclass(frozen=True)
class PlannedPackage:
    name: str
    version: str
    arch: str
    checksum: str  # `C:`
    repository: str  # as configured
    repository_tag: str
    size: int  # .apk bytes
    installed_size: int
    origin: str

    @classmethod
    def of(cls, pkg: Package) -> PlannedPackage:
        return cls(pkg.name, pkg.version, pkg.arch, pkg.checksum, pkg.repository,
                   pkg.repository_tag, pkg.size, pkg.installed_size, pkg.origin)

    @property
    def pin(self) -> str:
        return f"{self.name}={self.version}"


def locking_pin(pkg: Package) -> str:
    """The world entry that locks `pkg`: `name=version`, as apko writes it. A version that is
    not a valid apk version (a real melange package ships `1.5.7-r1-r1`) cannot be written
    as a constraint — apk-tools refuses `name=<invalid>` as a dependency while it reads such
    a package from an index without complaint — so that package is locked by its checksum
    (`name><Q1…`, apk-tools' checksum pin, which takes no version), and a warning names the
    package and the index it came from."""
    if is_valid_version(pkg.version):
        return f"{pkg.name}={pkg.version}"
    log.warning("%s %s from %s: not a valid apk version; locked by its checksum %s (versions "
                "compare as apk-tools compares them: the invalid tail sorts lowest)",
                pkg.name, pkg.version, pkg.repository or "its index", pkg.checksum)
    return f"{pkg.name}><{pkg.checksum}"


@dataclass(frozen=True)
class ArchPlan:
    arch: str  # OCI name
    apk_arch: str
    packages: tuple[PlannedPackage, ...]  # install order

    @property
    def pinned(self) -> list[str]:
        """The locked world: sorted `name=version` (what apko writes as the packages)."""
        return sorted(p.pin for p in self.packages)


@dataclass(frozen=True)
class KeyDigest:
    name: str  # file name in /etc/apk/keys
    sha256: str


@dataclass(frozen=True)
class BuildPlan:
    config: str
    config_sha256: str
    world: tuple[str, ...]
    repositories: tuple[str, ...]  # the build repositories, as configured
    keys: tuple[KeyDigest, ...]
    source_date_epoch: int | None
    build_date: int
    archs: tuple[ArchPlan, ...]

    @property
    def options_epoch(self) -> int:
        """What stamps scripts.tar entries: SOURCE_DATE_EPOCH, else --build-date."""
        return self.source_date_epoch if self.source_date_epoch is not None else self.build_date

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> BuildPlan:
        return cls(
            config=doc["config"], config_sha256=doc["config_sha256"],
            world=tuple(doc["world"]), repositories=tuple(doc["repositories"]),
            keys=tuple(KeyDigest(**k) for k in doc["keys"]),
            source_date_epoch=doc["source_date_epoch"], build_date=doc["build_date"],
            archs=tuple(ArchPlan(a["arch"], a["apk_arch"],
                                 tuple(PlannedPackage(**p) for p in a["packages"]))
                        for a in doc["archs"]))


@dataclass
class Planned:
    """The live objects a plan was made from (not serialised)."""

    cfg: ImageConfig
    keys: list[tuple[str, bytes]]  # (file name in /etc/apk/keys, PEM)
    packages: dict[str, list[Package]]  # apk arch -> resolved index records, install order
    locked: dict[str, list[LockedPackage]] = field(default_factory=dict)  # --lockfile


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


def read_keys(cfg: ImageConfig) -> list[tuple[str, bytes]]:
    """(file name in /etc/apk/keys, PEM) for each keyring entry (local paths)."""
    out = []
    for ref in cfg.contents.keyring:
        name = ref.rstrip("/").rsplit("/", 1)[-1]
        where = cfg.resolve_local(ref)
        if "://" in where:
            raise FetchError(f"keyring {ref}: remote keys are not supported; download the "
                             "key and give its path")
        try:
            out.append((name, Path(where).read_bytes()))
        except OSError as exc:
            raise ConfigError(f"keyring {ref}: cannot read {where}: "
                              f"{exc.strerror or exc}") from None
    return out


def make_plan(opts: BuildOptions, rec: SpanRecorder, fetcher: Fetcher) -> tuple[BuildPlan,
                                                                               Planned]:
    """Run config, index and resolve; the plan and what it was made from."""
    from builder.apk.signing import Keyring
    from builder.repo.repository import parse_repository

    chosen = opts.chosen()
    registry = current()
    with rec.span("config", impl=chosen["config"]) as s:
        overrides = dict(archs=opts.archs, keyring_append=opts.keyring_append,
                         repository_append=opts.repository_append,
                         build_repository_append=opts.build_repository_append,
                         package_append=opts.package_append, annotations=opts.annotations)
        cfg: ImageConfig = registry.get("config", chosen["config"]).obj(
            opts.config, opts.workdir, overrides)
        config_bytes = Path(opts.config).read_bytes()
        s.bytes_in = len(config_bytes)
    sde = source_date_epoch()
    build_date = parse_build_date(opts.build_date) if opts.build_date else 0
    keys = read_keys(cfg)
    keyring = Keyring()
    for name, pem in keys:
        keyring.add(name, pem, name)
    repo_lines = build_repositories(cfg)
    repos = [parse_repository(r, "repositories", cfg.resolve_local) for r in repo_lines]
    if not repos:
        raise ConfigError(f"{cfg.source_file}: contents.repositories: no repository given")
    world = list(cfg.contents.packages)
    if not world:
        raise ConfigError(f"{cfg.source_file}: contents.packages: no package given")
    for i, text in enumerate(world):
        try:
            parse_constraint(text)
        except FormatError as exc:
            raise ConfigError(f"{cfg.source_file}: contents.packages[{i}]: {exc}") from None
    load_index = registry.get("index", chosen["index"]).obj
    resolve = registry.get("resolve", chosen["resolve"]).obj
    archs: list[ArchPlan] = []
    resolved: dict[str, list[Package]] = {}
    locked: dict[str, list[LockedPackage]] = {}
    if opts.lockfile:
        locked = from_lockfile(opts.lockfile, cfg, rec)
    for arch in cfg.archs if not locked else ():
        arch = oci_arch(arch)
        aarch = apk_arch(arch)
        with rec.span("index", aarch, impl=chosen["index"]) as s:
            available = load_index(repos, aarch, keyring, fetcher, opts.allow_untrusted)
            s.attrs["packages"] = len(available)
        with rec.span("resolve", aarch, impl=chosen["resolve"]) as s:
            first = resolve(world, available, aarch)
            # apko locks the world to exact versions, then installs in the order the pinned
            # world resolves to.
            ordered = resolve(sorted(locking_pin(p) for p in first), available, aarch)
            s.attrs["packages"] = len(ordered)
        resolved[aarch] = ordered
        archs.append(ArchPlan(arch, aarch, tuple(PlannedPackage.of(p) for p in ordered)))
    for arch in cfg.archs if locked else ():
        aarch = apk_arch(oci_arch(arch))
        resolved[aarch] = [_locked_record(lp, cfg) for lp in locked[aarch]]
        archs.append(ArchPlan(oci_arch(arch), aarch,
                              tuple(PlannedPackage.of(p) for p in resolved[aarch])))
    plan = BuildPlan(
        config=str(opts.config), config_sha256=hashlib.sha256(config_bytes).hexdigest(),
        world=tuple(world), repositories=tuple(repo_lines),
        keys=tuple(KeyDigest(n, hashlib.sha256(pem).hexdigest()) for n, pem in keys),
        source_date_epoch=sde, build_date=build_date, archs=tuple(archs))
    return plan, Planned(cfg, keys, resolved, locked)


def from_lockfile(path: str, cfg: ImageConfig,
                  rec: SpanRecorder) -> dict[str, list[LockedPackage]]:
    """apk arch -> the lockfile's packages for it, install order (the index and resolve
    spans record that no index was read and nothing was solved). A lock made from another
    config (its checksum over the config and its includes) is refused, as apko refuses it."""
    from builder.lock import config_checksum, read_lock

    doc, pkgs = read_lock(Path(path))
    want = (doc.get("config") or {}).get("checksum")
    have = config_checksum([Path(p).read_bytes() for p in cfg.sources])
    if not want:
        log.warning("%s: the lockfile has no checksum of its config; regenerate it with "
                    "`apkimage lock`", path)
    elif want != have:
        raise ConfigError(f"{path}: made from another configuration than {cfg.source_file} "
                          f"(config checksum {want}, the file now has {have}): regenerate it "
                          "with `apkimage lock`")
    out: dict[str, list[LockedPackage]] = {}
    for arch in cfg.archs:
        aarch = apk_arch(oci_arch(arch))
        with rec.span("index", aarch, impl="lockfile") as s:
            out[aarch] = [p for p in pkgs if p.arch == aarch]
            s.attrs["packages"] = len(out[aarch])
        if not out[aarch]:
            raise ConfigError(f"{path}: no packages locked for {aarch} (the lock has "
                              f"{', '.join(sorted({p.arch for p in pkgs})) or 'none'})")
        with rec.span("resolve", aarch, impl="lockfile") as s:
            s.attrs["packages"] = len(out[aarch])
    return out


def _locked_record(lp: LockedPackage, cfg: ImageConfig) -> Package:
    """An index-like record of a locked package: the fetch stage verifies the file against
    it (size, `C:` = the control section's SHA-1, the data section's SHA-256)."""
    import base64

    from builder.repo.repository import parse_repository

    repo_line = lp.url.rsplit("/", 2)[0]
    repo = parse_repository(repo_line, "lockfile", cfg.resolve_local)
    return Package(name=lp.name, version=lp.version, arch=lp.arch, checksum=lp.checksum,
                   size=lp.sections.data[1] + 1, repository=repo.url,
                   datahash=base64.b64decode(lp.sections.data[2].removeprefix("sha256-"))
                   .hex())
