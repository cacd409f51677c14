"""What apko does to the image after installing packages (apko-notes
§1.8), in its order: accounts, `/etc/apko.json`, path mutations, s6 service files, busybox
links (from `/etc/busybox-paths.d`), character devices, and the runtime
`/etc/apk/repositories`.

"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from builder.config import ImageConfig, locked_json, runtime_repositories
from builder.errors import ConfigError, FormatError
from builder.fs.kinds import FILE, HARDLINK
from builder.fs.model import FsModel
from builder.gojson import dumps_encoder
from builder.install.apkdb import ensure_char_devices

GECOS = "Account created by apko"


@dataclass
class MutateContext:
    cfg: ImageConfig
    arch: str  # OCI name
    pinned: list[str]  # sorted name=version list (the locked contents.packages)


@dataclass
class MutateResult:
    user: str  # OCI config User ("" when run-as is not set)


def _read_lines(fs: FsModel, path: str) -> tuple[list[str], bool]:
    if not fs.exists(path):
        return [], False
    text = fs.read(path).decode("utf-8", "replace")
    return [ln for ln in text.splitlines() if ln.strip()], True


def _write_text(fs: FsModel, path: str, lines: list[str], mode: int, existed: bool) -> None:
    data = "".join(f"{ln}\n" for ln in lines).encode()
    if existed:
        m = fs.get(path)
        assert m is not None
        fs.write_file(path, data, m.mode, mtime=m.mtime, package=m.package)
    else:
        fs.write_file(path, data, mode)


def mutate_accounts(fs: FsModel, cfg: ImageConfig) -> str:
    """groups, users (passwd/shadow, homes) and the numeric `run-as`."""
    acc = cfg.accounts
    if acc.groups:
        lines, existed = _read_lines(fs, "etc/group")
        for g in acc.groups:
            lines.append(f"{g.groupname}:x:{g.gid}:{','.join(g.members)}")
        _write_text(fs, "etc/group", lines, 0o644, existed)
    lines, existed = _read_lines(fs, "etc/passwd")
    for u in acc.users:
        gid = u.uid if u.gid is None else u.gid
        lines.append(f"{u.username}:x:{u.uid}:{gid}:{GECOS}:{u.homedir}:{u.shell or '/bin/sh'}")
    _write_text(fs, "etc/passwd", lines, 0o644, existed)
    if acc.users:
        shadow, sh_existed = _read_lines(fs, "etc/shadow")
        shadow += [f"{u.username}:!:::::::" for u in acc.users]
        _write_text(fs, "etc/shadow", shadow, 0o640, sh_existed)
    passwd = _parse_passwd(fs)
    for name, (uid, gid, home) in passwd.items():
        if not home or home == "/dev/null" or fs.exists(home):
            continue
        parent = posixpath.dirname(home.rstrip("/"))
        fs.mkdir_all(parent, 0o755, who="accounts")
        fs.mkdir(home, 0o700, uid=uid, gid=gid, who=f"accounts: home of {name}")
    run_as = acc.run_as
    if run_as and not run_as.isdigit():
        if run_as not in passwd:
            raise ConfigError(f"{cfg.source_file}: accounts.run-as: no user named {run_as!r}")
        run_as = str(passwd[run_as][0])
    return run_as


def _parse_passwd(fs: FsModel) -> dict[str, tuple[int, int, str]]:
    out: dict[str, tuple[int, int, str]] = {}
    lines, _ = _read_lines(fs, "etc/passwd")
    for ln in lines:
        f = ln.split(":")
        if len(f) >= 6 and f[2].isdigit() and f[3].isdigit() and f[0] not in out:
            out[f[0]] = (int(f[2]), int(f[3]), f[5])
    return out


def _permissions(fs: FsModel, path: str, mode: int, uid: int, gid: int,
                 recursive: bool, who: str) -> None:
    canon = fs.resolve(path, who=who)
    if canon not in fs.meta:
        raise ConfigError(f"{who}: {path} does not exist")
    targets = [canon]
    if recursive:
        targets += [k for k in fs.meta if k.startswith(canon + "/")]
    for t in targets:
        m = fs.meta[t]
        if mode:
            m.mode = mode & 0o7777
        if uid or gid:
            m.uid, m.gid = uid, gid


def mutate_paths(fs: FsModel, cfg: ImageConfig) -> None:
    for i, p in enumerate(cfg.paths):
        who = f"{p.where or f'{cfg.source_file}: paths[{i}]'} ({p.path})"  # file:line: paths[i]
        path = p.path.lstrip("/")
        if p.type == "directory":
            fs.mkdir_all(path, p.permissions or 0o755, who=who)
        elif p.type == "empty-file":
            fs.write_file(path, b"", p.permissions or 0o644, who=who)
        elif p.type == "hardlink":
            # apko creates these without a tar header: the layer gets a second regular file.
            src = fs.resolve(p.source.lstrip("/"), who=who)
            m = fs.meta.get(src)
            if m is None or m.kind not in (FILE, HARDLINK):
                raise ConfigError(f"{who}: hardlink source {p.source} is not a file")
            fs.write_file(path, fs.read(src), m.mode, who=who)
        elif p.type == "symlink":
            fs.symlink(path, p.source, mtime=0, who=who)
            continue  # permissions of a symlink are meaningless
        try:
            _permissions(fs, path, p.permissions, p.uid, p.gid, p.recursive, who)
        except FormatError as exc:
            raise ConfigError(str(exc)) from None


def write_services(fs: FsModel, cfg: ImageConfig) -> None:
    for name, cmd in sorted(cfg.entrypoint.services.items()):
        fs.mkdir_all("sv", 0o777)
        fs.mkdir_all(f"sv/{name}", 0o777)
        fs.write_file(f"sv/{name}/run", f"#!/bin/execlineb\n{cmd}\n".encode(), 0o755)


def busybox_links(fs: FsModel) -> None:
    """Links to /bin/busybox listed by packages in /etc/busybox-paths.d/*."""
    if not fs.exists("bin/busybox") or not fs.is_dir("etc/busybox-paths.d"):
        return
    base = fs.resolve("etc/busybox-paths.d")
    for key in sorted(k for k in fs.meta if posixpath.dirname(k) == base):
        if fs.meta[key].kind not in (FILE, HARDLINK):
            continue
        for line in fs.read(key).decode().splitlines():
            target = line.strip().lstrip("/")
            if not target or fs.exists(target, follow=False):
                continue
            parent = posixpath.dirname(target)
            if parent:
                fs.mkdir_all(parent)
            fs.symlink(target, "/bin/busybox")


def write_apko_json(fs: FsModel, ctx: MutateContext) -> None:
    doc = locked_json(ctx.cfg, ctx.arch, ctx.pinned)
    fs.write_file("etc/apko.json", dumps_encoder(doc), 0o444)


def mutate_reference(fs: FsModel, ctx: MutateContext) -> MutateResult:
    user = mutate_accounts(fs, ctx.cfg)
    write_apko_json(fs, ctx)
    mutate_paths(fs, ctx.cfg)
    write_services(fs, ctx.cfg)
    busybox_links(fs)
    ensure_char_devices(fs)
    repos = runtime_repositories(ctx.cfg)
    fs.write_file("etc/apk/repositories", "".join(f"{r}\n" for r in repos).encode() or b"\n")
    return MutateResult(user=user)
