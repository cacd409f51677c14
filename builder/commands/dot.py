"""`apkimage dot CONFIG`: the resolved dependency graph of a configuration in Graphviz dot, as
apko's `dot` draws it (first arch only): the config, its `contents.packages` entries (and the
package each constraint names), every resolved package labelled `name-version` with an edge
to each dependency, and edges from what a package provides to it. `-S` keeps only the first
edge into each dependency. `apkimage dot apko.yaml | dot -Tsvg > graph.svg`.

`--web` serves the graph as SVG (rendered by Graphviz's `dot`) on 127.0.0.1 and opens a
browser on it, as apko's does: each package links to the registry explorer (`-e`), and
`/?node=NAME` (repeatable) draws those packages first, which is what `-S` keeps."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from builder.apk.model import Package

# Identifiers dot takes unquoted (the rule of the Go library apko draws with).
_BARE = (re.compile(r"[_a-zA-Z][a-zA-Z0-9_,]*"),
         re.compile(r'[_a-zA-Z][a-zA-Z0-9_,:"]*[a-zA-Z0-9_,"]+'))
_KEYWORDS = {"node", "edge", "graph", "digraph", "subgraph", "strict"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dot", help="the dependency graph in Graphviz dot", description=__doc__)
    p.add_argument("config", help="apko-style YAML image configuration")
    p.add_argument("--arch", action="append", default=[],
                   help="architecture (the first one is drawn)")
    p.add_argument("-S", "--spanning-tree", action="store_true",
                   help="only the first edge into each dependency")
    p.add_argument("-k", "--keyring-append", action="append", default=[], metavar="KEY")
    p.add_argument("-r", "--repository-append", action="append", default=[], metavar="REPO")
    p.add_argument("--cache-dir", default=None, help="cache root (default ~/.cache/apkimage)")
    p.add_argument("--offline", action="store_true", help="use only cached indexes")
    p.add_argument("--web", action="store_true",
                   help="serve the graph as SVG on 127.0.0.1 and open a browser on it")
    p.add_argument("-e", "--registry-explorer", default="apk.dag.dev", metavar="HOST",
                   help="with --web, the host package nodes link to (default apk.dag.dev)")
    p.add_argument("--port", type=int, default=0, help="with --web, the port (default: any)")
    p.set_defaults(func=run)


def quote(text: str) -> str:
    if text.lower() in _KEYWORDS or (text.startswith('"') and text.endswith('"')) or \
            any(r.fullmatch(text) for r in _BARE):
        return text
    return '"' + text.replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r") + '"'


def _cut(text: str) -> str:
    """A dependency or constraint's package name as apko cuts it: before `=`, else `~`."""
    for sep in ("=", "~"):
        if sep in text:
            return text.split(sep, 1)[0]
    return text


class Graph:
    """Nodes and edges in insertion order; a node's attributes may be set later."""

    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, str]] = {}
        self.order: list[tuple[Literal["node"], str] | tuple[Literal["edge"], str, str]] = []

    def node(self, name: str, **attrs: str) -> None:
        if name not in self.nodes:
            self.nodes[name] = {}
            self.order.append(("node", name))
        self.nodes[name].update(attrs)

    def edge(self, src: str, dst: str) -> None:
        self.order.append(("edge", src, dst))

    def render(self) -> str:
        out = ["digraph images {", "graph [", "  rankdir=LR;", "];"]
        for item in self.order:
            if item[0] == "node":
                attrs = self.nodes[item[1]]
                body = ", ".join(f"{k}={quote(v)}" for k, v in sorted(attrs.items()))
                out.append(f"{quote(item[1])}" + (f" [{body}];" if body else ";"))
            else:
                out.append(f"{quote(item[1])} -> {quote(item[2])}")
        return "\n".join(out) + "\n}\n"


def explorer_url(pkg: Package, explorer: str) -> str:
    """apko's link for a package node: the package URL with `://` and `:` made `/`, double
    slashes collapsed, under `https://<explorer>/`."""
    from builder.lock import package_url

    path = package_url(pkg.repository, pkg.arch, pkg.name, pkg.version)
    path = path.replace("://", "/").replace(":", "/")
    while "//" in path:
        path = path.replace("//", "/")
    return f"https://{explorer}/{path}"


def draw(config_name: str, world: Iterable[str], packages: list[Package], spanning: bool,
         explorer: str | None = None, first: Iterable[str] = ()) -> Graph:
    """The graph; with `explorer`, nodes link to it (--web). Packages named in `first` are
    drawn before the others (so `-S` keeps their edges)."""
    by_name = {p.name: p for p in packages}

    def link(node: str, pkg: Package) -> None:
        if explorer is not None:
            g.node(node, URL=explorer_url(pkg, explorer), target="_blank",
                   tooltip=pkg.description)

    g = Graph()
    g.node(config_name)
    for entry in world:
        g.node(entry)
        g.edge(config_name, entry)
        name = _cut(entry)
        if name != entry:
            g.node(name)
            g.edge(entry, name)
            if name in by_name:
                link(entry, by_name[name])
    wanted = list(first)
    ordered = [by_name[n] for n in wanted] + [p for p in packages if p.name not in wanted]
    deps: set[str] = set()
    targets: set[str] = set()
    for pkg in ordered:
        g.node(pkg.name, label=f"{pkg.name}-{pkg.version}", tooltip=pkg.description)
        link(pkg.name, pkg)
        for dep in pkg.depends:
            name = _cut(dep)
            deps.add(name)
            if name == pkg.name or (spanning and name in targets):
                continue
            g.node(name)
            if name in by_name and ":" not in name:
                link(name, by_name[name])
            g.edge(pkg.name, name)
            targets.add(name)
    for pkg in ordered:
        drawn = False
        for prov in pkg.provides:
            if prov in deps:
                if spanning and drawn:
                    continue
                g.node(prov)
                g.edge(prov, pkg.name)
                drawn = True
            elif _cut(prov) != prov and _cut(prov) in deps:
                g.node(_cut(prov), shape="rect")
                g.edge(_cut(prov), pkg.name)
    return g


def run(args: argparse.Namespace) -> int:
    from builder.plan import BuildOptions, make_plan
    from builder.repo.fetch import Fetcher
    from builder.spans import SpanRecorder

    opts = BuildOptions(config=args.config, archs=list(args.arch)[:1],
                        keyring_append=list(args.keyring_append),
                        repository_append=list(args.repository_append), offline=args.offline,
                        cache_dir=args.cache_dir)
    with Fetcher(args.cache_dir, offline=args.offline) as fetcher:
        plan, planned = make_plan(opts, SpanRecorder(), fetcher)
    first = plan.archs[0].apk_arch
    world, packages = planned.cfg.contents.packages, planned.packages[first]
    if args.web:
        return serve(args, world, packages)
    print(draw(args.config, world, packages, args.spanning_tree).render())
    return 0


def svg(dot_text: str) -> bytes:
    """Graphviz's rendering of `dot_text` as SVG."""
    import shutil
    import subprocess

    from builder.errors import ApkImageError

    if shutil.which("dot") is None:
        raise ApkImageError("dot --web needs Graphviz's `dot` on PATH (Debian: graphviz)")
    done = subprocess.run(["dot", "-Tsvg"], input=dot_text.encode(), capture_output=True,
                          check=False)
    if done.returncode != 0:
        raise ApkImageError(f"dot -Tsvg failed: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def serve(args: argparse.Namespace, world: list[str], packages: list[Package]) -> int:
    """Serve the graph on 127.0.0.1 until interrupted; `/?node=NAME` draws NAME first."""
    import logging
    import webbrowser
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs, urlsplit

    from builder.errors import ApkImageError

    log = logging.getLogger("builder.dot")
    svg(draw(args.config, world, packages, args.spanning_tree).render())  # fail before serving
    known = {p.name for p in packages}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if parts.path != "/":
                self.send_error(404)
                return
            nodes = parse_qs(parts.query).get("node", [])
            unknown = [n for n in nodes if n not in known]
            if unknown:
                self.send_error(404, f"package not found: {', '.join(unknown)}")
                return
            log.info("%s: rendering %s", self.path, nodes or "all")
            try:
                body = svg(draw(args.config, world, packages, args.spanning_tree,
                                explorer=args.registry_explorer, first=nodes).render())
            except ApkImageError as exc:
                self.send_error(500, str(exc))
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/svg+xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt: str, *a: object) -> None:
            log.debug(fmt, *a)

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    url = f"http://localhost:{server.server_address[1]}"
    log.info("serving the graph at %s (links to %s); Ctrl-C stops", url, args.registry_explorer)
    print(url, flush=True)
    webbrowser.open(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
