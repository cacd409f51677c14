"""`apkimage verify`: check packages (and APKINDEX files) against a keyring."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from builder.errors import FormatError

if TYPE_CHECKING:
    from builder.apk.signing import Keyring


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "verify",
        help="verify .apk packages or APKINDEX.tar.gz files",
        description="Verify signature, control checksum, datahash and per-file SHA-1 of "
        "packages (or the signature of APKINDEX.tar.gz files).",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help=".apk or APKINDEX.tar.gz")
    p.add_argument(
        "--keyring",
        action="append",
        default=[],
        metavar="PATH",
        help="directory of *.pub keys, or one key file (repeatable)",
    )
    p.add_argument(
        "--allow-unsigned",
        action="store_true",
        help="accept unsigned packages/indexes (other checks still apply)",
    )
    p.set_defaults(func=run)


def load_keyring(paths: list[str]) -> Keyring:
    from builder.apk.signing import Keyring

    ring = Keyring()
    for path in paths:
        p = Path(path)
        if p.is_dir():
            ring.merge(Keyring.from_dir(p))
        elif p.is_file():
            ring.merge(Keyring.from_paths([p]))
        else:
            raise FormatError(f"{p}: keyring path does not exist")
    return ring


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise FormatError(f"{path}: cannot read: {exc.strerror}") from None


def verify_file(path: str, keyring: Keyring, allow_unsigned: bool) -> str:
    from builder.apk.index import read_index
    from builder.apk.package import read_apk, verify_apk

    """Verify one file; the summary line on success (raises VerificationError otherwise)."""
    data = _read(path)
    if Path(path).name.endswith(".tar.gz") and "APKINDEX" in Path(path).name:
        index = read_index(data, keyring, path, allow_untrusted=allow_unsigned)
        signer = f"signed by {', '.join(index.signers)}" if index.signers else "UNTRUSTED"
        return f"{path}: OK ({signer}, {len(index.packages)} packages)"
    apk = read_apk(data, path)
    report = verify_apk(apk, keyring, require_signature=not allow_unsigned)
    signer = f"signed by {report.signer}" if report.signer else "unsigned"
    datahash = "datahash ok" if report.datahash_checked else "no datahash"
    return f"{report.package}: OK ({signer}, {report.files} files, {datahash})"


def run(args: argparse.Namespace) -> int:
    keyring = load_keyring(args.keyring)
    for path in args.files:
        print(verify_file(path, keyring, args.allow_unsigned))
    return 0
