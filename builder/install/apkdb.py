"""The apk database in the image: the skeleton apk's InitDB makes (directories, empty db files,
character devices, keys, repositories, world), then — after the packages are laid down —
`installed`, `scripts.tar` and `triggers` from what was installed (apko-notes §1.3)."""

from __future__ import annotations

import io

from builder.apk.installed_db import format_record
from builder.fs.kinds import CHAR
from builder.fs.model import FsModel
from builder.gotar import TarWriter
from builder.install.rules import InstallState

DB = "usr/lib/apk/db"
INSTALLED = f"{DB}/installed"
SCRIPTS = f"{DB}/scripts.tar"
TRIGGERS = f"{DB}/triggers"
_BASE_DIRS = [("tmp", 0o1777), ("dev", 0o755), ("etc", 0o755), ("opt", 0o755),
              ("proc", 0o555), ("var", 0o755), ("usr", 0o755)]
_APK_DIRS = ["etc/apk", "etc/apk/keys", "usr/lib", "usr/lib/apk", "usr/lib/apk/db",
             "usr/lib/apk/exec", "var/cache", "var/cache/apk", "var/cache/misc"]
CHAR_DEVICES = [("dev/zero", 1, 5, 0o666), ("dev/urandom", 1, 9, 0o666),
                ("dev/null", 1, 3, 0o666), ("dev/random", 1, 8, 0o666),
                ("dev/console", 5, 1, 0o620)]


def ensure_char_devices(fs: FsModel) -> None:
    for path, major, minor, mode in CHAR_DEVICES:
        if not fs.exists(path, follow=False):
            fs.mknod(path, CHAR, major, minor, mode)


def init_db(fs: FsModel, apk_arch: str, keys: list[tuple[str, bytes]],
            repositories: list[str], world: list[str]) -> None:
    """apk's database skeleton, InitKeyring, SetRepositories and SetWorld (apko-notes §1.3)."""
    for path, mode in _BASE_DIRS:
        if not fs.exists(path):
            fs.mkdir(path, mode)
    for path in _APK_DIRS:
        fs.mkdir_all(path)
    fs.write_file("etc/apk/world", b"\n")
    fs.write_file("etc/apk/repositories", b"\n")
    fs.write_file(f"{DB}/lock", b"", 0o600)
    fs.write_file(TRIGGERS, b"")
    fs.write_file(INSTALLED, b"")
    fs.write_file("etc/apk/arch", f"{apk_arch}\n".encode())
    ensure_char_devices(fs)
    fs.write_file(SCRIPTS, bytes(1024))
    for name, pem in keys:
        fs.write_file(f"etc/apk/keys/{name}", pem)
    fs.write_file("etc/apk/repositories", "".join(f"{r}\n" for r in repositories).encode()
                  or b"\n")
    fs.write_file("etc/apk/world", ("\n".join(sorted(world)) + "\n").encode())


def write_db(state: InstallState) -> None:
    """Write installed, scripts.tar and triggers from what was installed."""
    fs = state.fs
    state.records = {n: format_record(pkg, state.files[n]) for n, pkg in state.packages.items()}
    fs.write_file(INSTALLED, b"".join(state.records.values()))
    buf = io.BytesIO()
    tw = TarWriter(buf)
    for hdr, data in state.scripts:
        tw.add(hdr, data)
    tw.close()
    fs.write_file(SCRIPTS, buf.getvalue())
    fs.write_file(TRIGGERS, "".join(state.triggers).encode())


def resolve_apk_db(fs: FsModel) -> None:
    """`/lib/apk -> ../usr/lib/apk` unless `/lib` already is the usr-merged `usr/lib`."""
    if fs.resolve("lib") == "usr/lib":
        return
    fs.mkdir_all("lib")
    if not fs.exists("lib/apk", follow=False):
        fs.symlink("lib/apk", "../usr/lib/apk")
