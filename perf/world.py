"""The world: an image catalogue over one repository, built as a whole (`apkperf world`).

A catalogue shaped like a real one (Chainguard's images over Wolfi): `static`,
`glibc-dynamic`, `busybox`, `bash`, `git`, `curl`, `openssl`, `sqlite`, `perl`, `gcc-glibc`,
two Go toolchains, two Pythons, two JDKs (jre, jdk, maven), and the `-dev` variant of most of
them (the image plus `apk-tools busybox bash git`, as the catalogue's `-dev` tags add a shell
and a package manager). Every image carries the base (`synth-baselayout`,
`ca-certificates-bundle`) and, but for `static`, glibc; runtimes share their libraries. Each
config is apko YAML with `layering: {strategy: origin, budget: BUDGET}` and the catalogue's
nonroot account.

Workloads (prepared under `.perf/workloads`, like perf/workloads.py's: generated into a
temporary sibling in a child process, then renamed into place):

- `world`: the synthetic `world` preset (perf/corpus/synthetic.py: the go preset's packages
  at a third of their bytes plus the catalogue's runtimes; ~520 MB installed, 74 packages);
- `world-small`: the same catalogue over the `world-small` preset (~43 MB), for tests;
- `world-debian`: a smaller catalogue (14 images: busybox, bash, coreutils, git, ssh, make,
  gcc, Go and -dev variants) over the Debian-derived `debian-go` corpus (perf/corpus/debian.py;
  its configs under `world-debian-v<converter>-w<version>/configs`); no `world-bump` (there is
  no generator to bump a Debian package with);
- a PATH: a directory of config YAMLs (or one with a `configs/` directory), built as they are.

Directory of a synthetic world: `repo/` (the corpus: keys, `x86_64/`, corpus.json),
`configs/<image>.yaml` (pointing at `repo/`), `world.json` (the catalogue), and for the
`world-bump` scenario `bump-<name>-<version>/`, the same repository with one package bumped
(a new version and new content; every other package byte-identical).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from perf.corpus import ARCH, CorpusError

WORLD_VERSION = 1  # bump when the catalogue (the configs) changes
BUDGET = 10
BASE = ("synth-baselayout", "ca-certificates-bundle")
DEV_EXTRAS = ("apk-tools", "busybox", "bash", "git")
# The world-bump scenario's default: a library a handful of images hold (sqlite, pythons).
DEFAULT_BUMP = ("sqlite-libs", "3.45.3-r1")
WORLDS = {"world": "world", "world-small": "world-small"}  # workload -> synthetic preset


@dataclass(frozen=True)
class Image:
    name: str
    kind: str  # static, glibc-dynamic, busybox, bash, git, python, go, jdk, ...
    packages: tuple[str, ...]
    dev: bool = False  # a -dev variant


# name, kind, packages beyond BASE, has a -dev variant
_CATALOGUE: tuple[tuple[str, str, tuple[str, ...], bool], ...] = (
    ("static", "static", ("tzdata",), False),
    ("glibc-dynamic", "glibc-dynamic", ("tzdata", "glibc", "libgcc", "libxcrypt"), True),
    ("busybox", "busybox", ("glibc", "busybox"), False),
    ("wolfi-base", "busybox", ("busybox", "apk-tools"), False),
    ("bash", "bash", ("busybox", "bash"), True),
    ("git", "git", ("git",), True),
    ("curl", "tool", ("curl",), True),
    ("openssl", "tool", ("openssl",), True),
    ("sqlite", "tool", ("sqlite",), True),
    ("perl", "tool", ("perl",), True),
    ("gcc-glibc", "toolchain", ("build-base",), True),
    ("go", "go", ("go", "git"), True),
    ("go-1.21", "go", ("go-1.21", "git"), True),
    ("python-3.12", "python", ("python-3.12",), True),
    ("python-3.11", "python", ("python-3.11",), True),
    ("jre-17", "jdk", ("openjdk-17-jre",), True),
    ("jdk-17", "jdk", ("openjdk-17",), True),
    ("maven-17", "jdk", ("openjdk-17", "maven"), True),
    ("jre-21", "jdk", ("openjdk-21-jre",), True),
    ("jdk-21", "jdk", ("openjdk-21",), True),
    ("maven-21", "jdk", ("openjdk-21", "maven"), True),
)
_DEV_ADDS = {"python-3.12": ("py3.12-pip", "python-3.12-dev"),
             "python-3.11": ("py3.11-pip", "python-3.11-dev")}


# The Debian-derived world: Debian package names over the debian-go corpus.
_DEBIAN_BASE = ("debian-baselayout", "ca-certificates")
_DEBIAN_CATALOGUE: tuple[tuple[str, str, tuple[str, ...], bool], ...] = (
    ("busybox", "busybox", ("busybox",), False),
    ("bash", "bash", ("bash",), True),
    ("coreutils", "glibc-dynamic", ("coreutils",), True),
    ("git", "git", ("git",), True),
    ("openssh-client", "tool", ("openssh-client",), True),
    ("make", "tool", ("make",), False),
    ("gcc", "toolchain", ("gcc", "libc6-dev", "binutils", "make"), True),
    ("go", "go", ("golang-go", "git"), True),
)
_DEBIAN_DEV_EXTRAS = ("busybox", "bash", "git")


def debian_catalogue() -> list[Image]:
    """The Debian-derived world's images (and -dev variants: plus busybox, bash, git)."""
    out: list[Image] = []
    for name, kind, pkgs, has_dev in _DEBIAN_CATALOGUE:
        out.append(Image(name, kind, (*_DEBIAN_BASE, *pkgs)))
        if has_dev:
            extra = tuple(p for p in _DEBIAN_DEV_EXTRAS if p not in pkgs)
            out.append(Image(f"{name}-dev", kind, (*_DEBIAN_BASE, *pkgs, *extra), dev=True))
    return out


def catalogue() -> list[Image]:
    """The catalogue's images, each followed by its -dev variant when it has one."""
    out: list[Image] = []
    for name, kind, pkgs, has_dev in _CATALOGUE:
        out.append(Image(name, kind, (*BASE, *pkgs)))
        if has_dev:
            extra = tuple(p for p in (*_DEV_ADDS.get(name, ()), *DEV_EXTRAS) if p not in pkgs)
            out.append(Image(f"{name}-dev", kind, (*BASE, *pkgs, *extra), dev=True))
    return out


def image_config(image: Image, repository: str, keyring: str) -> dict[str, Any]:
    """The apko YAML document of one image."""
    return {
        "contents": {"keyring": [keyring], "repositories": [repository],
                     "packages": list(image.packages)},
        "archs": [ARCH],
        "accounts": {"groups": [{"groupname": "nonroot", "gid": 65532}],
                     "users": [{"username": "nonroot", "uid": 65532, "gid": 65532}],
                     "run-as": "0" if image.dev else "65532"},
        "environment": {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
        "layering": {"strategy": "origin", "budget": BUDGET},
        "annotations": {"org.opencontainers.image.title": image.name},
    }


def write_configs(images: list[Image], dest: Path, repository: str, keyring: str) -> list[Path]:
    """`dest/<image>.yaml` per image (dest created); returns the paths in catalogue order."""
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for image in images:
        path = dest / f"{image.name}.yaml"
        path.write_text(yaml.safe_dump(image_config(image, repository, keyring),
                                       sort_keys=False, width=1 << 20))
        paths.append(path)
    return paths


@dataclass
class World:
    """A prepared world: its configs, and (synthetic worlds) the repository they read."""

    name: str
    configs: list[Path]
    images: list[Image] = field(default_factory=list)  # [] for a PATH world
    repo_dir: Path | None = None  # the repository root (holds x86_64/APKINDEX.tar.gz)
    key_path: Path | None = None
    root: Path | None = None  # the world's directory (synthetic worlds)
    preset: str = ""
    seed: int = 0

    def configs_for(self, dest: Path, repository: str) -> list[Path]:
        """The catalogue's configs again, reading `repository` (a PATH world: its own)."""
        if not self.images or self.key_path is None:
            return list(self.configs)
        return write_configs(self.images, dest, repository, str(self.key_path))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "preset": self.preset, "seed": self.seed,
                "world_version": WORLD_VERSION, "budget": BUDGET,
                "images": [asdict(i) for i in self.images]}


def _complete(d: Path) -> bool:
    return (d / "world.json").is_file() and (d / "repo" / "corpus.json").is_file()


def _generate(final: Path, make: Any) -> None:
    from perf.workloads import _generate_into

    if final.exists() and not _complete(final) and not (final / "corpus.json").is_file():
        shutil.rmtree(final)
    _generate_into(final, make)


def prepare_world(name: str, root: str | os.PathLike[str]) -> World:
    """Make world `name` (`world`, `world-small`, optionally `:SEED`, or a PATH) available
    under `root` and describe it."""
    from perf.corpus.synthetic import GENERATOR_VERSION, generate
    from perf.workloads import _parse

    root = Path(root).resolve()
    if name == "world-debian":
        return _debian_world(root)
    base, seed = _parse(name)
    if base not in WORLDS:
        path = Path(name).expanduser()
        d = path / "configs" if (path / "configs").is_dir() else path
        configs = sorted(d.glob("*.yaml")) if d.is_dir() else []
        if not configs:
            raise CorpusError(f"unknown world {name!r}: expected world, world-small "
                              f"(optionally with :SEED) or a directory of config YAMLs")
        return World(name, [c.resolve() for c in configs])
    preset = WORLDS[base]
    final = root / f"{base}-s{seed}-v{GENERATOR_VERSION}-w{WORLD_VERSION}"
    images = catalogue()
    if not _complete(final):
        if final.exists():
            shutil.rmtree(final)

        def make(tmp: Path) -> None:
            info = generate(tmp / "repo", preset, seed, repo_url=str(final / "repo"))
            (tmp / "repo" / "apko.yaml").unlink()  # the go image's config: not the world's
            # The configs name where the world will live, not the temporary directory.
            write_configs(images, tmp / "configs", str(final / "repo"),
                          str(final / "repo" / info.key_name))
            doc = {"name": base, "preset": preset, "seed": seed, "world_version": WORLD_VERSION,
                   "budget": BUDGET, "images": [asdict(i) for i in images]}
            (tmp / "world.json").write_text(json.dumps(doc, indent=1) + "\n")

        _generate(final, make)
    info = json.loads((final / "repo" / "corpus.json").read_text())
    return World(base if seed == 1 else name,
                 [final / "configs" / f"{i.name}.yaml" for i in images], images,
                 final / "repo", final / "repo" / info["key_name"], final, preset, seed)


def _debian_world(root: Path) -> World:
    from perf.corpus.debian import CONVERTER_VERSION
    from perf.workloads import prepare_workload

    wl = prepare_workload("debian-go", root)
    images = debian_catalogue()
    d = root / f"world-debian-v{CONVERTER_VERSION}-w{WORLD_VERSION}"
    configs = write_configs(images, d / "configs", str(wl.repo_dir), str(wl.key_path))
    return World("world-debian", configs, images, wl.repo_dir, wl.key_path, None, "debian-go")


def prepare_bump(world: World, package: str, version: str) -> Path:
    """The world's repository with `package` at `version` (new content, every other package
    byte-identical), generated once into the world's directory; returns its root."""
    from perf.corpus.synthetic import generate

    if world.root is None:
        raise CorpusError(f"world {world.name!r}: world-bump needs a synthetic world (world, "
                          "world-small): this one has no generator to bump a package with")
    final = world.root / f"bump-{package}-{version}"
    if not (final / "corpus.json").is_file():
        def make(tmp: Path) -> None:
            generate(tmp, world.preset, world.seed, bumps={package: version})
            (tmp / "apko.yaml").unlink()

        from perf.workloads import _generate_into

        if final.exists():
            shutil.rmtree(final)
        _generate_into(final, make)
    return final


def contents(world: World, cache_dir: Path) -> dict[str, list[str]]:
    """image name -> its resolved install list (`name=version`), from the world's configs."""
    from builder.plan import BuildOptions, make_plan
    from builder.repo.fetch import Fetcher
    from builder.spans import SpanRecorder

    out: dict[str, list[str]] = {}
    with Fetcher(str(cache_dir)) as fetcher:
        for config in world.configs:
            plan, _ = make_plan(BuildOptions(config=str(config), cache_dir=str(cache_dir)),
                                SpanRecorder(), fetcher)
            out[config.stem] = [p.pin for a in plan.archs for p in a.packages]
    return out


def sharing(installed: dict[str, list[str]]) -> dict[str, Any]:
    """How much the images share: per package the images holding it, the share of images
    each package is in, and the packages every image has."""
    holders: dict[str, list[str]] = {}
    for image, pins in installed.items():
        for pin in pins:
            holders.setdefault(pin.split("=", 1)[0], []).append(image)
    n = len(installed)
    return {
        "images": n,
        "packages": len(holders),
        "holders": {p: sorted(v) for p, v in sorted(holders.items())},
        "in_every_image": sorted(p for p, v in holders.items() if len(v) == n),
        "mean_images_per_package": round(sum(map(len, holders.values())) / max(1, len(holders)),
                                         2),
    }
