"""apko-style image configuration: load, validate (errors name file:line and key), merge.

The YAML is read with the node API so every error can point at its line. The schema below is
the single source of truth for accepted keys and their types; anything else is a ConfigError.

Hostile input is refused with the same one-line errors, before it costs much: a config file
is at most MAX_CONFIG_BYTES, nested at most MAX_DEPTH levels, and its aliases (`*name`) may
stand for at most MAX_ALIAS_NODES nodes in all — counted while the YAML is composed, where an
alias is still one shared node, so an anchor bomb ("billion laughs") is refused before anything
expands; an alias inside the node it names is refused too. Includes nest at most
MAX_INCLUDE_DEPTH files deep. Merge keys (`<<: *base`) are applied as Go's yaml.v3 applies them
(apko reads its configs with it): the mapping's own keys win.

`locked_json(...)` renders the per-arch locked configuration in the field order and omitempty
rules of apko's Go structs, which is what ends up (Go-JSON encoded) in `/etc/apko.json`.
"""

from __future__ import annotations

import copy
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from builder.archs import ARCHS, oci_arch, parse_archs
from builder.errors import ConfigError
from builder.gojson import Struct

# --------------------------------------------------------------------------- model

@dataclass
class Contents:
    build_repositories: list[str] = field(default_factory=list)
    runtime_repositories: list[str] = field(default_factory=list)
    repositories: list[str] = field(default_factory=list)
    keyring: list[str] = field(default_factory=list)
    packages: list[str] = field(default_factory=list)


@dataclass
class Entrypoint:
    type: str = ""
    command: str = ""
    shell_fragment: str = ""
    services: dict[str, str] = field(default_factory=dict)

    def is_zero(self) -> bool:
        return not (self.type or self.command or self.shell_fragment or self.services)


@dataclass
class User:
    username: str = ""
    uid: int = 0
    gid: int | None = None
    shell: str = ""
    homedir: str = ""


@dataclass
class Group:
    groupname: str = ""
    gid: int = 0
    members: list[str] = field(default_factory=list)


@dataclass
class Accounts:
    run_as: str = ""
    users: list[User] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)


@dataclass
class PathMutation:
    path: str = ""
    type: str = ""
    uid: int = 0
    gid: int = 0
    permissions: int = 0
    source: str = ""
    recursive: bool = False
    # `file:line: paths[i]`, for errors found when the mutation is applied (not apko's field)
    where: str = field(default="", compare=False, repr=False)


LAYERING_STRATEGIES = ("origin",)


@dataclass
class Layering:
    """apko's `layering`: split the image into package layers by origin, at most `budget`
    of them, plus a top layer (builder/layering.py). `layering: {}` is one layer, as apko."""

    strategy: str = ""
    budget: int = 0

    @property
    def active(self) -> bool:
        return bool(self.strategy) or self.budget != 0


@dataclass
class ImageConfig:
    contents: Contents = field(default_factory=Contents)
    entrypoint: Entrypoint = field(default_factory=Entrypoint)
    cmd: str = ""
    stop_signal: str = ""
    work_dir: str = ""
    accounts: Accounts = field(default_factory=Accounts)
    archs: list[str] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)
    paths: list[PathMutation] = field(default_factory=list)
    vcs_url: str = ""
    annotations: dict[str, str] = field(default_factory=dict)
    include: str = ""
    volumes: list[str] = field(default_factory=list)
    layering: Layering | None = None  # None: absent (apko.json tells absent from `{}`)
    # Not part of the schema: where the file was, and what relative local paths resolve
    # against (the working directory, or --workdir).
    source_file: str = ""
    sources: list[str] = field(default_factory=list)  # the file, then its includes, depth first
    base_dir: str = ""

    def resolve_local(self, ref: str) -> str:
        """A repository/keyring reference as a local path or URL usable by the builder.

        URLs pass through; relative paths are resolved against `base_dir` (the working
        directory unless overridden with --workdir). The config keeps the string as written.
        """
        if "://" in ref:
            if ref.startswith("file://"):
                return ref[len("file://"):]
            return ref
        p = Path(ref)
        if not p.is_absolute() and self.base_dir:
            p = Path(self.base_dir) / p
        return str(p)


# --------------------------------------------------------------------------- schema

# kind: "str" | "int" | "bool" | ("list", kind) | ("map", kind) | dict (object schema) |
#       ("list", dict)
_USER = {"username": "str", "uid": "int", "gid": "int", "shell": "str", "homedir": "str"}
_GROUP = {"groupname": "str", "gid": "int", "members": ("list", "str")}
_PATH = {"path": "str", "type": "str", "uid": "int", "gid": "int", "permissions": "int",
         "source": "str", "recursive": "bool"}
SCHEMA: dict[str, Any] = {
    "contents": {
        "repositories": ("list", "str"), "keyring": ("list", "str"),
        "packages": ("list", "str"), "build_repositories": ("list", "str"),
        "runtime_repositories": ("list", "str"),
    },
    "entrypoint": {"type": "str", "command": "str", "shell-fragment": "str",
                   "services": ("map", "str")},
    "cmd": "str",
    "work-dir": "str",
    "stop-signal": "str",
    "accounts": {"groups": ("list", _GROUP), "users": ("list", _USER), "run-as": "str"},
    "environment": ("map", "str"),
    "paths": ("list", _PATH),
    "archs": ("list", "str"),
    "annotations": ("map", "str"),
    "volumes": ("list", "str"),
    "include": "str",
    "vcs-url": "str",
    "layering": {"strategy": "str", "budget": "int"},
}
PATH_TYPES = ("directory", "empty-file", "hardlink", "symlink", "permissions")

# Limits on a config file (README "Config limits"); no real apko config comes near them.
MAX_CONFIG_BYTES = 1 << 20  # one file (apko's are a few KiB)
MAX_DEPTH = 64  # nested collections (the schema needs four)
MAX_ALIAS_NODES = 100_000  # nodes that aliases stand for, counted as if expanded
MAX_INCLUDE_DEPTH = 16  # files in an include chain

_INT_TAG = "tag:yaml.org,2002:int"
_STR_TAG = "tag:yaml.org,2002:str"
_BOOL_TAG = "tag:yaml.org,2002:bool"
_NULL_TAG = "tag:yaml.org,2002:null"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_KIND_NAMES = {"str": "a string", "int": "an integer", "bool": "true or false"}
_TRUE = ("true", "yes", "on", "y")
_FALSE = ("false", "no", "off", "n")


def _show(value: str, width: int = 40) -> str:
    """A value for an error message: its repr, cut short (an error stays one short line)."""
    return repr(value) if len(value) <= width else repr(value[:width]) + "..."


def _zero(kind: Any) -> Any:
    """What Go's yaml.v3 leaves for a null list item or map value: the zero value."""
    if isinstance(kind, dict):
        return {}
    if isinstance(kind, tuple):
        return [] if kind[0] == "list" else {}
    return {"str": "", "int": 0, "bool": False}[kind]


def _parse_int(text: str) -> int:
    """YAML int text, Go yaml.v3 style: 0o/0x/0b prefixes and a leading 0 meaning octal."""
    t = text.replace("_", "").strip()
    sign = -1 if t.startswith("-") else 1
    t = t.lstrip("+-")
    if len(t) > 24:  # far past any uint32; int() would also refuse 4,300 digits
        raise ValueError(text)
    if t[:2].lower() == "0o":
        return sign * int(t[2:], 8)
    if len(t) > 1 and t[0] == "0" and t[1].isdigit():
        return sign * int(t, 8)
    return sign * int(t, 0)


class _Loader(yaml.SafeLoader):
    """PyYAML's composer with the limits above: depth, alias expansion, recursive aliases.
    Each node's expanded size (nodes, counting what aliases in it stand for) is recorded as
    it is composed, so an alias adds its target's size without anything being expanded."""

    def __init__(self, stream: str, filename: str) -> None:
        super().__init__(stream)
        self.filename = filename
        self._depth = 0
        self._alias_nodes = 0
        self._sizes: dict[int, int] = {}

    def _refuse(self, mark: Any, msg: str) -> ConfigError:
        return ConfigError(f"{self.filename}:{mark.line + 1}: {msg}")

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            target = self.anchors.get(event.anchor)
            if target is not None:
                size = self._sizes.get(id(target))
                if size is None:
                    raise self._refuse(event.start_mark, f"alias *{event.anchor} is inside "
                                       "the node it names (a recursive alias)")
                self._alias_nodes += size
                if self._alias_nodes > MAX_ALIAS_NODES:
                    raise self._refuse(event.start_mark, f"alias *{event.anchor}: aliases "
                                       f"stand for more than {MAX_ALIAS_NODES} nodes "
                                       "(an alias bomb?)")
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise self._refuse(event.start_mark, f"nested more than {MAX_DEPTH} levels deep")
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if isinstance(node, yaml.SequenceNode):
            size = 1 + sum(self._sizes[id(n)] for n in node.value)
        elif isinstance(node, yaml.MappingNode):
            size = 1 + sum(self._sizes[id(k)] + self._sizes[id(v)] for k, v in node.value)
        else:
            size = 1
        self._sizes[id(node)] = size
        return node


def compose_yaml(text: str, filename: str) -> yaml.Node | None:
    """The YAML node tree of `text` (None when empty), within the limits; ConfigError naming
    `filename` and the line otherwise."""
    loader = None
    try:
        loader = _Loader(text, filename)  # its reader checks every character first
        return loader.get_single_node()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            line = f":{mark.line + 1}"
        elif isinstance(getattr(exc, "position", None), int):  # a ReaderError
            line = f":{text.count(chr(10), 0, exc.position) + 1}"  # type: ignore[attr-defined]
        else:
            line = ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{filename}{line}: invalid YAML: {problem}") from None
    finally:
        if loader is not None:
            loader.dispose()


class _Decoder:
    """Schema-checked values from the node tree; `lines` records each key's line, by its full
    name (`paths[2].type`), for errors found after decoding."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.lines: dict[str, int] = {}

    def err(self, node: yaml.Node, key: str, msg: str) -> ConfigError:
        return ConfigError(f"{self.filename}:{node.start_mark.line + 1}: {key}: {msg}")

    def decode(self, node: yaml.Node, kind: Any, key: str) -> Any:
        self.lines.setdefault(key, node.start_mark.line + 1)
        if isinstance(node, yaml.ScalarNode) and node.tag == _NULL_TAG:
            return None
        if isinstance(kind, dict):
            return self.obj(node, kind, key)
        if isinstance(kind, tuple):
            container, inner = kind
            if container == "list":
                if not isinstance(node, yaml.SequenceNode):
                    raise self.err(node, key, "expected a list")
                items = [self.decode(n, inner, f"{key}[{i}]") for i, n in enumerate(node.value)]
                return [_zero(inner) if v is None else v for v in items]
            if not isinstance(node, yaml.MappingNode):
                raise self.err(node, key, "expected a mapping")
            out: dict[str, Any] = {}
            for knode, vnode in self.pairs(node, key):
                k = self.scalar_str(knode, key)
                if k in out:
                    raise self.err(knode, f"{key}.{k}", "duplicate key")
                v = self.decode(vnode, inner, f"{key}.{k}")
                out[k] = _zero(inner) if v is None else v
            return out
        if not isinstance(node, yaml.ScalarNode):
            raise self.err(node, key, f"expected {_KIND_NAMES[kind]}")
        if kind == "str":
            return node.value
        if kind == "int":
            if node.tag not in (_INT_TAG, _STR_TAG):
                raise self.err(node, key, f"expected an integer, got {_show(node.value)}")
            try:
                value = _parse_int(node.value)
            except ValueError:
                raise self.err(node, key, f"expected an integer, got {_show(node.value)}") \
                    from None
            if value < 0 or value > 0xFFFFFFFF:
                raise self.err(node, key, f"out of range: {value} (0 to 4294967295)")
            return value
        if kind == "bool":
            low = node.value.lower()
            if low in _TRUE + _FALSE and (node.tag == _BOOL_TAG or low in ("true", "false")):
                return low in _TRUE
            raise self.err(node, key, f"expected true or false, got {_show(node.value)}")
        raise AssertionError(kind)

    def scalar_str(self, node: yaml.Node, key: str) -> str:
        if not isinstance(node, yaml.ScalarNode):
            raise self.err(node, key or "config", "mapping keys must be strings")
        return node.value

    def pairs(self, node: yaml.MappingNode, key: str) -> list[tuple[yaml.Node, yaml.Node]]:
        """The mapping's (key, value) nodes with merge keys applied (yaml.v3's rule): the
        mapping's own keys win over merged ones, an earlier merged mapping over a later."""
        own: list[tuple[yaml.Node, yaml.Node]] = []
        merged: list[tuple[yaml.Node, yaml.Node]] = []
        for knode, vnode in node.value:
            if not (isinstance(knode, yaml.ScalarNode) and knode.tag == _MERGE_TAG):
                own.append((knode, vnode))
                continue
            sources = vnode.value if isinstance(vnode, yaml.SequenceNode) else [vnode]
            for src in sources:
                if not isinstance(src, yaml.MappingNode):
                    raise self.err(src, f"{key}.<<" if key else "<<",
                                   "merges a mapping or a list of mappings")
                merged += self.pairs(src, key)
        taken = {k.value for k, _ in own if isinstance(k, yaml.ScalarNode)}
        for knode, vnode in merged:
            if knode.value not in taken:
                taken.add(knode.value)
                own.append((knode, vnode))
        return own

    def obj(self, node: yaml.Node, schema: dict[str, Any], key: str) -> dict[str, Any]:
        if not isinstance(node, yaml.MappingNode):
            raise self.err(node, key or "config", "expected a mapping")
        out: dict[str, Any] = {}
        for knode, vnode in self.pairs(node, key):
            k = self.scalar_str(knode, key)
            full = f"{key}.{k}" if key else k
            if k not in schema:
                raise self.err(knode, _show(full, 60)[1:-1], "unknown key")
            if k in out:
                raise self.err(knode, full, "duplicate key")
            self.lines[full] = knode.start_mark.line + 1
            out[k] = self.decode(vnode, schema[k], full)
        return out


def _climbs_out(path: str) -> bool:
    """Whether `path`, read from the image root (a leading `/` is the root), has a `..`
    that would climb above it."""
    depth = 0
    for part in path.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part and part != ".":
            depth += 1
    return False


def _build(raw: dict[str, Any], filename: str, lines: dict[str, int]) -> ImageConfig:
    def where(key: str) -> str:
        """`file:line: key`, the line of `key` or of the nearest enclosing key decoded."""
        probe = key
        while probe and probe not in lines:
            probe = probe[:max(probe.rfind("."), probe.rfind("["), 0)]
        return f"{filename}:{lines.get(probe, 1)}: {key}"

    cfg = ImageConfig()
    c = raw.get("contents") or {}
    cfg.contents = Contents(
        build_repositories=[r.rstrip("/") for r in c.get("build_repositories") or []],
        runtime_repositories=[r.rstrip("/") for r in c.get("runtime_repositories") or []],
        repositories=[r.rstrip("/") for r in c.get("repositories") or []],
        keyring=list(c.get("keyring") or []),
        packages=list(c.get("packages") or []),
    )
    e = raw.get("entrypoint") or {}
    cfg.entrypoint = Entrypoint(type=e.get("type") or "", command=e.get("command") or "",
                                shell_fragment=e.get("shell-fragment") or "",
                                services=dict(e.get("services") or {}))
    if cfg.entrypoint.type not in ("", "service-bundle"):
        raise ConfigError(f"{where('entrypoint.type')}: unsupported entrypoint type "
                          f"{_show(cfg.entrypoint.type)} (only 'service-bundle')")
    cfg.cmd = raw.get("cmd") or ""
    cfg.work_dir = raw.get("work-dir") or ""
    cfg.stop_signal = raw.get("stop-signal") or ""
    a = raw.get("accounts") or {}
    cfg.accounts = Accounts(
        run_as=a.get("run-as") or "",
        users=[User(username=u.get("username") or "", uid=u.get("uid") or 0, gid=u.get("gid"),
                    shell=u.get("shell") or "", homedir=u.get("homedir") or "")
               for u in a.get("users") or []],
        groups=[Group(groupname=g.get("groupname") or "", gid=g.get("gid") or 0,
                      members=list(g.get("members") or [])) for g in a.get("groups") or []],
    )
    for i, user in enumerate(cfg.accounts.users):
        if not user.username:
            raise ConfigError(f"{where(f'accounts.users[{i}].username')}: missing")
        if user.uid == 0:
            raise ConfigError(f"{where(f'accounts.users[{i}].uid')}: user {user.username!r} "
                              "has UID 0 (to run as root, use `run-as: 0`)")
    for i, group in enumerate(cfg.accounts.groups):
        if not group.groupname:
            raise ConfigError(f"{where(f'accounts.groups[{i}].groupname')}: missing")
    cfg.archs = [oci_arch(x, where(f"archs[{i}]"))
                 for i, x in enumerate(raw.get("archs") or [])]
    cfg.environment = dict(raw.get("environment") or {})
    cfg.paths = []
    for i, p in enumerate(raw.get("paths") or []):
        pm = PathMutation(path=p.get("path") or "", type=p.get("type") or "",
                          uid=p.get("uid") or 0, gid=p.get("gid") or 0,
                          permissions=p.get("permissions") or 0, source=p.get("source") or "",
                          recursive=bool(p.get("recursive")), where=where(f"paths[{i}]"))
        if pm.type not in PATH_TYPES:
            raise ConfigError(f"{where(f'paths[{i}].type')}: unknown path mutation type "
                              f"{_show(pm.type)} (one of {', '.join(PATH_TYPES)})")
        if not pm.path:
            raise ConfigError(f"{where(f'paths[{i}].path')}: missing")
        if pm.type in ("hardlink", "symlink") and not pm.source:
            raise ConfigError(f"{where(f'paths[{i}].source')}: required for {pm.type}")
        for name in ("path", "source"):
            value = getattr(pm, name)
            if "\0" in value:
                raise ConfigError(f"{where(f'paths[{i}].{name}')}: {_show(value)} holds a "
                                  "NUL byte")
            # a symlink's source is its target: any text (resolved inside the root later)
            if (name == "path" or pm.type == "hardlink") and _climbs_out(value):
                raise ConfigError(f"{where(f'paths[{i}].{name}')}: {_show(value)} climbs "
                                  "above the image root")
        cfg.paths.append(pm)
    cfg.vcs_url = raw.get("vcs-url") or ""
    cfg.annotations = dict(raw.get("annotations") or {})
    cfg.include = raw.get("include") or ""
    cfg.volumes = list(raw.get("volumes") or [])
    if "layering" in raw:
        lay = raw["layering"] or {}
        cfg.layering = Layering(lay.get("strategy") or "", lay.get("budget") or 0)
        if cfg.layering.active and cfg.layering.strategy not in LAYERING_STRATEGIES:
            raise ConfigError(f"{where('layering.strategy')}: unrecognized layering strategy "
                              f"{_show(cfg.layering.strategy)} (apko knows: "
                              f"{', '.join(LAYERING_STRATEGIES)})")
    return cfg


def merge_into(base: ImageConfig, target: ImageConfig) -> None:
    """apko's include merge: `target` (the including file) wins for scalars and map keys;
    lists are concatenated with the included (`base`) entries first. `layering` is never
    inherited (apko's merge does not copy it)."""
    if target.entrypoint.is_zero():
        target.entrypoint = copy.deepcopy(base.entrypoint)
    target.cmd = target.cmd or base.cmd
    target.stop_signal = target.stop_signal or base.stop_signal
    target.work_dir = target.work_dir or base.work_dir
    target.vcs_url = target.vcs_url or base.vcs_url
    if not target.archs:
        target.archs = list(base.archs)
    target.accounts.run_as = target.accounts.run_as or base.accounts.run_as
    target.accounts.users = copy.deepcopy(base.accounts.users) + target.accounts.users
    target.accounts.groups = copy.deepcopy(base.accounts.groups) + target.accounts.groups
    target.environment = {**base.environment, **target.environment}
    target.annotations = {**base.annotations, **target.annotations}
    target.paths = copy.deepcopy(base.paths) + target.paths
    target.volumes = base.volumes + target.volumes
    bc, tc = base.contents, target.contents
    tc.keyring = bc.keyring + tc.keyring
    tc.repositories = bc.repositories + tc.repositories
    tc.build_repositories = bc.build_repositories + tc.build_repositories
    tc.runtime_repositories = bc.runtime_repositories + tc.runtime_repositories
    tc.packages = bc.packages + tc.packages


def _validate(cfg: ImageConfig, filename: str) -> None:
    """What holds for the merged config (each file's own entries are checked in _build)."""
    for u in cfg.accounts.users:
        if not u.homedir:
            u.homedir = "/home/" + u.username
    if cfg.entrypoint.type == "service-bundle":
        cfg.entrypoint.command = "/bin/s6-svscan /sv"
        cfg.contents.packages.append("s6")


def read_config_text(path: Path) -> str:
    """The text of a config file: a regular file (a FIFO or device could block or never
    end) of at most MAX_CONFIG_BYTES, UTF-8 (a BOM allowed). ConfigError naming it."""
    try:
        # O_NONBLOCK: opening a FIFO would otherwise wait for a writer (for a regular file
        # it changes nothing)
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise ConfigError(f"{path}: cannot read config: not a regular file")
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: config is larger than {MAX_CONFIG_BYTES >> 20} MiB "
                          f"(the limit MAX_CONFIG_BYTES; apko configs are a few KiB)")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 (byte {raw[exc.start]:#04x} at offset "
                          f"{exc.start})") from None


def _load_file(path: Path, seen: tuple[Path, ...], base: Path) -> ImageConfig:
    path = path.resolve() if path.exists() else path
    if path in seen:
        raise ConfigError(f"{seen[-1]}: include: include cycle through {path}")
    node = compose_yaml(read_config_text(path), str(path))
    if node is None:
        raw: dict[str, Any] = {}
        lines: dict[str, int] = {}
    else:
        decoder = _Decoder(str(path))
        raw = decoder.obj(node, SCHEMA, "")
        lines = decoder.lines
    cfg = _build(raw, str(path), lines)
    cfg.source_file = str(path)
    cfg.base_dir = str(base)
    cfg.sources = [str(path)]
    if cfg.include:
        inc = base / cfg.include
        if not inc.exists():
            raise ConfigError(f"{path}:{lines.get('include', 1)}: include: "
                              f"file not found: {cfg.include} (tried {inc})")
        if len(seen) + 1 >= MAX_INCLUDE_DEPTH:
            raise ConfigError(f"{path}:{lines.get('include', 1)}: include: includes nest "
                              f"more than {MAX_INCLUDE_DEPTH} files deep ({cfg.include})")
        included = _load_file(inc, seen + (path,), base)
        merge_into(included, cfg)
        cfg.sources += included.sources
    return cfg


def find_config(path: str, include_paths: list[str]) -> Path:
    """The config file `path` names: as given (relative to the working directory), else in
    each of apko's `--include-paths` in turn."""
    tried = [Path(path)]
    tried += [Path(inc) / path for inc in include_paths if not Path(path).is_absolute()]
    for candidate in tried:
        if candidate.is_file():
            return candidate
    raise ConfigError(f"{path}: configuration file not found (tried "
                      f"{', '.join(str(t.absolute()) for t in tried)})")


def load_config(path: str | Path, workdir: str | Path | None = None) -> ImageConfig:
    """Load and validate a config file (following `include`).

    Relative `include`, `contents.keyring` and `contents.repositories` paths resolve against
    the working directory, as apko resolves them (its test configs say `./testdata/...` with
    the config in `testdata/`); `workdir` (`--workdir`) names another directory to resolve
    them against, e.g. the config file's own.
    """
    base = Path(workdir).resolve() if workdir is not None else Path.cwd()
    cfg = _load_file(Path(path), (), base)
    _validate(cfg, cfg.source_file)
    return cfg


# --------------------------------------------------------------------------- overrides

def apply_overrides(
    cfg: ImageConfig,
    *,
    archs: list[str] | None = None,
    keyring_append: list[str] | None = None,
    repository_append: list[str] | None = None,
    build_repository_append: list[str] | None = None,
    package_append: list[str] | None = None,
    annotations: list[str] | None = None,
) -> ImageConfig:
    """CLI overrides (apko semantics): appends to lists; `--annotations k:v` wins per key."""
    if archs:
        cfg.archs = parse_archs([a for x in archs for a in x.split(",") if a], "--arch")
    elif cfg.archs:
        cfg.archs = parse_archs(cfg.archs)
    else:
        cfg.archs = sorted(ARCHS)
    cfg.contents.keyring += list(keyring_append or [])
    cfg.contents.repositories += [r.rstrip("/") for r in repository_append or []]
    cfg.contents.build_repositories += [r.rstrip("/") for r in build_repository_append or []]
    cfg.contents.packages += list(package_append or [])
    for item in annotations or []:
        key, sep, value = item.partition(":")
        if not sep or not key:
            raise ConfigError(f"--annotations: expected key:value, got {item!r}")
        cfg.annotations[key] = value
    return cfg


def build_repositories(cfg: ImageConfig) -> list[str]:
    """Repositories used for resolution: sorted set of build_repositories ∪ repositories."""
    return sorted(set(cfg.contents.build_repositories) | set(cfg.contents.repositories))


def runtime_repositories(cfg: ImageConfig) -> list[str]:
    """What ends in /etc/apk/repositories: sorted set of repositories ∪ runtime_repositories."""
    return sorted(set(cfg.contents.repositories) | set(cfg.contents.runtime_repositories))


# --------------------------------------------------------------------------- apko.json

def locked_json(cfg: ImageConfig, arch: str, pinned: list[str]) -> Struct:
    """The locked per-arch config as apko serialises it (struct field order, omitempty).

    `pinned` is the sorted `name=version` list that replaces `contents.packages`.
    Structs (`contents`, `entrypoint`, `accounts`) are never omitted by Go's omitempty;
    Go maps (`environment`, `annotations`, `services`) are dicts (keys sorted on output).
    """
    return config_struct(cfg, [oci_arch(arch)], pinned)


def config_struct(cfg: ImageConfig, archs: list[str], packages: list[str]) -> Struct:
    """The configuration in apko's field order and omitempty rules (apko.json, show-config)."""
    pinned = packages

    def put(d: dict[str, Any], key: str, value: Any) -> None:
        if value:  # omitempty: "", 0, false, empty list/map
            d[key] = value

    contents: dict[str, Any] = {}
    put(contents, "build_repositories", list(cfg.contents.build_repositories))
    put(contents, "runtime_repositories", list(cfg.contents.runtime_repositories))
    put(contents, "repositories", list(cfg.contents.repositories))
    put(contents, "keyring", list(cfg.contents.keyring))
    put(contents, "packages", list(pinned))
    entry: dict[str, Any] = {}
    put(entry, "type", cfg.entrypoint.type)
    put(entry, "command", cfg.entrypoint.command)
    put(entry, "shell-fragment", cfg.entrypoint.shell_fragment)
    put(entry, "services", dict(sorted(cfg.entrypoint.services.items())))
    users = []
    for u in cfg.accounts.users:
        ud: dict[str, Any] = {}
        put(ud, "username", u.username)
        put(ud, "uid", u.uid)
        if u.gid is not None:  # pointer: present (even 0) when set
            ud["gid"] = u.gid
        put(ud, "shell", u.shell)
        put(ud, "homedir", u.homedir)
        users.append(Struct(ud.items()))
    groups = []
    for g in cfg.accounts.groups:
        gd: dict[str, Any] = {}
        put(gd, "groupname", g.groupname)
        put(gd, "gid", g.gid)
        put(gd, "members", list(g.members))
        groups.append(Struct(gd.items()))
    accounts: dict[str, Any] = {}
    put(accounts, "run-as", cfg.accounts.run_as)
    put(accounts, "users", users)
    put(accounts, "groups", groups)
    paths = []
    for p in cfg.paths:
        pd: dict[str, Any] = {}
        for key in ("path", "type", "uid", "gid", "permissions", "source", "recursive"):
            put(pd, key, getattr(p, key))
        paths.append(Struct(pd.items()))
    out: dict[str, Any] = {"contents": Struct(contents.items()),
                           "entrypoint": Struct(entry.items())}
    put(out, "cmd", cfg.cmd)
    put(out, "stop-signal", cfg.stop_signal)
    put(out, "work-dir", cfg.work_dir)
    out["accounts"] = Struct(accounts.items())
    put(out, "archs", list(archs))
    put(out, "environment", dict(sorted(cfg.environment.items())))
    put(out, "paths", paths)
    put(out, "vcs-url", cfg.vcs_url)
    put(out, "annotations", dict(sorted(cfg.annotations.items())))
    put(out, "include", cfg.include)
    put(out, "volumes", list(cfg.volumes))
    if cfg.layering is not None:  # a pointer in apko: `layering: {}` is written as {}
        lay: dict[str, Any] = {}
        put(lay, "strategy", cfg.layering.strategy)
        put(lay, "budget", cfg.layering.budget)
        out["layering"] = Struct(lay.items())
    return Struct(out.items())
