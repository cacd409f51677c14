"""`apkimage index`: write a signed APKINDEX.tar.gz for the .apk files of a directory."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from builder.errors import FormatError

if TYPE_CHECKING:
    from builder.apk.model import Package


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "index",
        help="write DIR/APKINDEX.tar.gz for the .apk files in DIR",
        description="Index the .apk files of a directory into a signed APKINDEX.tar.gz.",
    )
    p.add_argument("directory", metavar="DIR")
    p.add_argument(
        "--signing-key",
        metavar="KEY.rsa",
        help="RSA private key (PEM); without it the index is unsigned",
    )
    p.add_argument(
        "--key-name",
        metavar="NAME",
        help="public key file name recorded in the signature (default: <signing key>.pub)",
    )
    p.add_argument("--description", default="", metavar="TEXT", help="DESCRIPTION text")
    p.add_argument(
        "--arch",
        metavar="A",
        help="only index packages of this architecture (others are skipped with a warning)",
    )
    p.set_defaults(func=run)


def index_directory(directory: Path, arch: str | None = None) -> list[Package]:
    from builder.apk.index import index_record_from_apk
    from builder.apk.package import read_apk

    """Index records of the `.apk` files in `directory` (sorted by file name)."""
    if not directory.is_dir():
        raise FormatError(f"{directory}: not a directory")
    packages: list[Package] = []
    for path in sorted(directory.glob("*.apk")):
        data = path.read_bytes()
        apk = read_apk(data, str(path))
        pkg = index_record_from_apk(apk, len(data))
        if arch and pkg.arch not in (arch, "noarch"):
            print(f"apkimage: skipping {path.name}: arch {pkg.arch}, not {arch}", file=sys.stderr)
            continue
        packages.append(pkg)
    return packages


def run(args: argparse.Namespace) -> int:
    directory = Path(args.directory)
    packages = index_directory(directory, args.arch)
    private_pem = None
    key_name = args.key_name or ""
    if args.signing_key:
        try:
            private_pem = Path(args.signing_key).read_bytes()
        except OSError as exc:
            raise FormatError(
                f"{args.signing_key}: cannot read signing key: {exc.strerror}"
            ) from None
        key_name = key_name or Path(args.signing_key).name + ".pub"
    from builder.apk.index import write_index
    from builder.util.atomic import write_bytes

    out = directory / "APKINDEX.tar.gz"
    write_bytes(out, write_index(packages, private_pem, key_name, args.description))
    signed = f"signed as {key_name}" if private_pem else "UNSIGNED"
    print(f"{out}: {len(packages)} packages, {signed}")
    return 0
