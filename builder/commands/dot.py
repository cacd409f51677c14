"""`apkimage dot CONFIG`: the resolved dependency graph of a configuration in Graphviz dot, as
apko's `dot` draws it (first arch only): the config, its `contents.packages` entries (and the
package each constraint names), every resolved package labelled `name-version` with an edge
to each dependency, and edges from what a package provides to it. `-S` keeps only the first
edge into each dependency. `apkimage dot apko.yaml | dot -Tsvg > graph.svg`."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable

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
        self.order: list[tuple[str, str] | tuple[str, str, str]] = []

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


def draw(config_name: str, world: Iterable[str], packages: list, spanning: bool) -> Graph:
    g = Graph()
    g.node(config_name)
    for entry in world:
        g.node(entry)
        g.edge(config_name, entry)
        name = _cut(entry)
        if name != entry:
            g.node(name)
            g.edge(entry, name)
    deps: set[str] = set()
    targets: set[str] = set()
    for pkg in packages:
        g.node(pkg.name, label=f"{pkg.name}-{pkg.version}", tooltip=pkg.description)
        for dep in pkg.depends:
            name = _cut(dep)
            deps.add(name)
            if name == pkg.name or (spanning and name in targets):
                continue
            g.node(name)
            g.edge(pkg.name, name)
            targets.add(name)
    for pkg in packages:
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
    graph = draw(args.config, planned.cfg.contents.packages, planned.packages[first],
                 args.spanning_tree)
    print(graph.render())
    return 0
