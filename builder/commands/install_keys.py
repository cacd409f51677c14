"""`apkimage install-keys`: discover the signing keys of the repositories listed in
`<root>/etc/apk/repositories` and write them to `<root>/etc/apk/keys/`, as apko's
`install-keys` does (Alpine's releases.json for Alpine branch URLs, `<repo>/apk-configuration`
key discovery for the rest; builder/repo/keydiscovery.py). Keys arrive over the network:
use https repositories, and read what `--dry-run` lists before trusting it."""

from __future__ import annotations

import argparse
import logging
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING

from builder.errors import ConfigError

if TYPE_CHECKING:
    import requests

log = logging.getLogger("builder.install_keys")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("install-keys", help="discover and install keys for all repositories",
                       description=__doc__)
    p.add_argument("--root", default="/", metavar="DIR",
                   help="the system whose etc/apk/repositories is read and whose etc/apk/keys "
                        "is written (default /)")
    p.add_argument("-r", "--repository-append", action="append", default=[], metavar="REPO",
                   help="a repository to discover keys for besides the repositories file")
    p.add_argument("--arch", default=None,
                   help="architecture whose Alpine keys are wanted (default: this machine's)")
    p.add_argument("--alpine-releases-url", default=None, metavar="URL",
                   help="Alpine's releases.json (default https://alpinelinux.org/releases.json)")
    p.add_argument("--ca-file", default=None, metavar="PEM")
    p.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS")
    p.add_argument("--dry-run", action="store_true", help="list the keys, write nothing")
    p.add_argument("--json", action="store_true", help="print [{name, url, path, written}]")
    p.set_defaults(func=run)


def read_repositories(path: Path) -> list[str]:
    """The repository URLs of an apk `repositories` file: one per line, `#` comments and
    blank lines skipped, an `@tag ` prefix dropped; a missing file is no repositories."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    repos = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("@"):
            parts = line.split(None, 1)
            if len(parts) < 2:
                continue
            line = parts[1].strip()
        repos.append(line)
    return repos


def run(args: argparse.Namespace) -> int:
    import json

    import requests

    from builder.archs import apk_arch
    from builder.errors import FetchError
    from builder.repo.http import HttpOptions, make_session
    from builder.repo.keydiscovery import ALPINE_RELEASES_URL, discover_keys
    from builder.util.atomic import AtomicFile

    root = Path(args.root)
    repos_file = root / "etc/apk/repositories"
    repos = read_repositories(repos_file) + list(args.repository_append)
    if not repos:
        raise ConfigError(f"{repos_file}: no repositories (and no --repository-append)")
    arch = apk_arch(args.arch or platform.machine())
    session = make_session(HttpOptions(timeout=args.timeout, ca_file=args.ca_file))
    timeout = args.timeout

    def get(url: str, authenticated: bool) -> requests.Response:
        try:
            return session.get(url, stream=True, timeout=timeout)
        except requests.exceptions.RequestException as exc:
            raise FetchError(f"{url}: cannot connect: {exc}") from None

    with session:
        keys = discover_keys(repos, arch, get, args.alpine_releases_url or ALPINE_RELEASES_URL)
    keys_dir = root / "etc/apk/keys"
    rows = []
    for key in keys:
        dest = keys_dir / key.name
        if not args.dry_run:
            try:
                with AtomicFile(keys_dir) as tmp:
                    tmp.file.write(key.pem)
                    os.fchmod(tmp.file.fileno(), 0o644)
                    tmp.commit(dest)
            except OSError as exc:
                raise ConfigError(f"{dest}: cannot write key: {exc.strerror or exc}") from None
            log.info("wrote %s (from %s)", dest, key.url)
        rows.append({"name": key.name, "url": key.url, "path": os.fspath(dest),
                     "written": not args.dry_run})
    if args.json:
        print(json.dumps(rows, indent=2))
    elif args.dry_run:
        for row in rows:
            print(f"{row['name']}\t{row['url']}")
    if not keys:
        log.warning("no keys found for %s", ", ".join(repos))
    return 0
