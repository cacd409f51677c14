"""Named benchmark workloads: a signed repository plus an apko config, ready to build.

- `small`, `go`: synthetic corpora (`perf.corpus.synthetic`), generated on first use into
  `<root>/<preset>-s<seed>-v<generator version>/` and reused afterwards. A seed can be given
  as `small:7`. The directory is complete once `corpus.json` exists: it is generated into a
  temporary sibling and renamed into place, so two harness processes never see half a corpus.
- `debian-go`, `debian-small`: Debian packages converted to APKs (`perf.corpus.debian`) into
  `<root>/debian-<preset>-v<converter version>/`, the same way (temp sibling, then rename).
  Needs the Debian mirror the first time; the downloads and conversions are cached in
  `debian_cache` (default: `$APKPERF_DEBIAN_CACHE`, else `<root>/debian-cache`), so
  regenerating a removed workload takes seconds.
- any PATH to an existing directory holding `apko.yaml` (and `<arch>/APKINDEX.tar.gz`).
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from perf.corpus import ARCH, CorpusError, CorpusInfo

SYNTHETIC = ("small", "go")
DEBIAN = {"debian-go": "go", "debian-small": "small"}
DEFAULT_SEED = 1


@dataclass(frozen=True)
class Workload:
    name: str
    repo_dir: Path  # the repository root (contains <arch>/APKINDEX.tar.gz)
    config_path: Path  # apko YAML installing the workload
    key_path: Path  # public key that signs the repository
    arch: str = ARCH


def _parse(name: str) -> tuple[str, int]:
    base, _, seed = name.partition(":")
    if not seed:
        return base, DEFAULT_SEED
    try:
        return base, int(seed)
    except ValueError:
        raise CorpusError(f"workload {name!r}: seed after ':' must be an integer") from None


def _complete(d: Path, preset: str, seed: int | None, version: int) -> bool:
    marker = d / "corpus.json"
    if not marker.is_file() or not (d / "apko.yaml").is_file():
        return False
    info = CorpusInfo.load(marker)
    return (info.preset, info.seed, info.generator_version) == (preset, seed, version)


def _from_dir(name: str, d: Path) -> Workload:
    config = d / "apko.yaml"
    if not config.is_file():
        raise CorpusError(f"workload {name!r}: {config} does not exist (not a corpus directory)")
    try:
        doc = yaml.safe_load(config.read_text()) or {}
        contents = doc.get("contents") or {}
        keyring = [Path(k) for k in contents.get("keyring") or []]
        archs = doc.get("archs") or [ARCH]
    except (OSError, yaml.YAMLError, AttributeError) as exc:
        raise CorpusError(f"workload {name!r}: cannot read {config}: {exc}") from None
    if not keyring:
        raise CorpusError(f"workload {name!r}: {config}: contents.keyring is empty")
    key = keyring[0] if keyring[0].is_absolute() else (d / keyring[0]).resolve()
    arch = str(archs[0])
    if not (d / arch / "APKINDEX.tar.gz").is_file():
        raise CorpusError(f"workload {name!r}: {d / arch / 'APKINDEX.tar.gz'} does not exist")
    return Workload(name, d.resolve(), config.resolve(), key, arch)


def _run_in_child(make: Callable[[Path], None], tmp: Path) -> None:
    """Run `make(tmp)` in a forked child process. Generating a corpus takes hundreds of MB;
    in the harness's own process that memory would stay, and every build it forks later
    would report it as its peak RSS (ru_maxrss counts the pages shared at fork time)."""
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)

    def target() -> None:
        try:
            make(tmp)
        except BaseException as exc:  # reported to the parent, which raises it
            child.send(f"{type(exc).__name__}: {exc}")
            raise SystemExit(1) from None
        child.send("")

    proc = ctx.Process(target=target, name="workload-generator")
    proc.start()
    child.close()
    try:
        message = parent.recv()
    except EOFError:  # died without a word (killed, crashed): its exit status says more
        message = ""
    proc.join()
    if message or proc.exitcode != 0:
        raise CorpusError(f"generating {tmp.name.lstrip('.')}: "
                          f"{message or f'generator exited with status {proc.exitcode}'}")


def _generate_into(final: Path, make: Callable[[Path], None]) -> None:
    """Run `make(tmpdir)` (in a child process) and atomically move the result to `final`."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        _run_in_child(make, tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            # Someone else finished first (or a stale partial dir is in the way).
            if final.exists() and (final / "corpus.json").is_file():
                shutil.rmtree(tmp, ignore_errors=True)
                return
            shutil.rmtree(final, ignore_errors=True)
            os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fix_paths(d: Path, tmp_name: str, final: Path) -> None:
    """Point keyring/repository paths that were written inside the temp dir at `final`."""
    config = d / "apko.yaml"
    doc = yaml.safe_load(config.read_text()) or {}
    contents = doc.get("contents") or {}
    for key in ("keyring", "repositories"):
        contents[key] = [str(final) + v[len(tmp_name):] if v.startswith(tmp_name) else v
                         for v in contents.get(key) or []]
    config.write_text(yaml.safe_dump(doc, sort_keys=False, width=1 << 20))


def debian_cache_dir(root: Path, debian_cache: str | os.PathLike[str] | None = None) -> Path:
    """Where Debian downloads/conversions are cached for workloads under `root`."""
    chosen = debian_cache or os.environ.get("APKPERF_DEBIAN_CACHE") or root / "debian-cache"
    return Path(chosen).resolve()


def prepare_workload(name: str, root: str | os.PathLike[str],
                     debian_cache: str | os.PathLike[str] | None = None) -> Workload:
    """Make workload `name` available under `root` (generating or converting it if needed)
    and describe it."""
    root = Path(root).resolve()
    base, seed = _parse(name)
    if base in SYNTHETIC:
        from perf.corpus.synthetic import GENERATOR_VERSION, generate

        final = root / f"{base}-s{seed}-v{GENERATOR_VERSION}"
        if not _complete(final, base, seed, GENERATOR_VERSION):
            if final.exists():
                shutil.rmtree(final)

            def make(tmp: Path) -> None:
                generate(tmp, base, seed, repo_url=str(final))
                _fix_paths(tmp, str(tmp.resolve()), final)

            _generate_into(final, make)
        return _from_dir(name, final)
    if base in DEBIAN:
        from perf.corpus.debian import CONVERTER_VERSION, convert_corpus

        preset = DEBIAN[base]
        cache = debian_cache_dir(root, debian_cache)
        final = root / f"{base}-v{CONVERTER_VERSION}"
        if not _complete(final, preset, None, CONVERTER_VERSION):
            if final.exists():
                shutil.rmtree(final)

            def make_debian(tmp: Path) -> None:
                convert_corpus(tmp, preset, None, cache, repo_url=str(final))
                _fix_paths(tmp, str(tmp.resolve()), final)

            _generate_into(final, make_debian)
        return _from_dir(name, final)
    path = Path(name).expanduser()
    if path.is_dir():
        return _from_dir(name, path)
    raise CorpusError(
        f"unknown workload {name!r}: expected small, go, debian-go, debian-small "
        f"(optionally with :SEED) or a corpus directory"
    )
