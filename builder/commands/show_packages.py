"""`apkimage show-packages CONFIG`: the packages and versions a build would install, per arch in
install order, one line each in apko's `--format` (a named format or a template over
`{{ .Name }}`, `{{ .Version }}` and `{{ .Source }}`, the package's URL). `--json` prints
`{"<apk arch>": [{"name", "version", "source"}, ...]}`."""

from __future__ import annotations

import argparse
import re

from builder.errors import ConfigError

FORMATS = {
    "name-version": "{{ .Name }} {{ .Version }}",
    "name-version-source": "{{ .Name }} {{ .Version }} {{ .Source }}",
    "name=version": "{{ .Name }}={{ .Version }}",
    "name=version-source": "{{ .Name }}={{ .Version }} {{ .Source }}",
    "name-(version)": "{{ .Name }} ({{ .Version }})",
    "name-(version)-source": "{{ .Name }} ({{ .Version }}) {{ .Source }}",
    "packagelock": "- {{ .Name }}={{ .Version }}",
    "packagelock-source": "- {{ .Name }}={{ .Version }} # {{ .Source }}",
}
_FIELD = re.compile(r"\{\{-?\s*\.(\w+)\s*-?\}\}")
FIELDS = ("Name", "Version", "Source")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("show-packages", help="the packages a configuration would install",
                       description=__doc__)
    p.add_argument("config", help="apko-style YAML image configuration")
    p.add_argument("--format", default="name-version",
                   help=f"one of {', '.join(FORMATS)}, or a template (default name-version)")
    p.add_argument("--arch", action="append", default=[],
                   help="architecture(s) (default: the config's archs)")
    p.add_argument("-k", "--keyring-append", action="append", default=[], metavar="KEY")
    p.add_argument("-r", "--repository-append", action="append", default=[], metavar="REPO")
    p.add_argument("--cache-dir", default=None, help="cache root (default ~/.cache/apkimage)")
    p.add_argument("--offline", action="store_true", help="use only cached indexes")
    p.add_argument("--json", action="store_true", help="a JSON object per arch")
    p.set_defaults(func=run)


def compile_format(text: str) -> str:
    """The template of a named format, or `text` itself when every field it names exists."""
    template = FORMATS.get(text, text)
    for m in _FIELD.finditer(template):
        if m.group(1) not in FIELDS:
            raise ConfigError(f"failed to parse format: {text!r}: no field .{m.group(1)} "
                              f"(fields: {', '.join('.' + f for f in FIELDS)})")
    if "{{" in _FIELD.sub("", template):
        raise ConfigError(f"failed to parse format: {text!r}: only {{{{ .Field }}}} is "
                          "supported")
    return template


def render(template: str, values: dict[str, str]) -> str:
    return _FIELD.sub(lambda m: values[m.group(1)], template)


def packages(args: argparse.Namespace) -> dict[str, list[dict[str, str]]]:
    from builder import lock
    from builder.plan import BuildOptions, make_plan
    from builder.repo.fetch import Fetcher
    from builder.spans import SpanRecorder

    opts = BuildOptions(config=args.config, archs=list(args.arch),
                        keyring_append=list(args.keyring_append),
                        repository_append=list(args.repository_append), offline=args.offline,
                        cache_dir=args.cache_dir)
    with Fetcher(args.cache_dir, offline=args.offline) as fetcher:
        plan, planned = make_plan(opts, SpanRecorder(), fetcher)
    cfg = planned.cfg
    written = lock.configured_repositories(cfg)
    return {a.apk_arch: [{"name": p.name, "version": p.version,
                          "source": lock.package_url(written.get(p.repository, p.repository),
                                                     a.apk_arch, p.name, p.version)}
                         for p in a.packages] for a in plan.archs}


def run(args: argparse.Namespace) -> int:
    import json

    template = compile_format(args.format)
    found = packages(args)
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    for rows in found.values():
        for row in rows:
            print(render(template, {"Name": row["name"], "Version": row["version"],
                                    "Source": row["source"]}))
    return 0
