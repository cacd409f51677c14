"""`apkimage show-config CONFIG`: the configuration as loaded (includes merged), in YAML with
apko's field names, order and omitempty rules, indented four spaces as apko's YAML encoder
does. The `-k`/`-r` extras are not part of it (as apko: they join only at build time)."""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

from builder.gojson import Struct  # (small: loaded by every build anyway)

_PLAIN = re.compile(r"[A-Za-z0-9_./][A-Za-z0-9_./@%+=,:\- ]*")
_RESERVED = {"true", "false", "yes", "no", "on", "off", "null", "~", "y", "n"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("show-config", help="print the configuration as loaded",
                       description=__doc__)
    p.add_argument("config", help="apko-style YAML image configuration")
    p.add_argument("--workdir", default=None, metavar="DIR",
                   help="resolve relative include paths against DIR (default: the cwd)")
    p.set_defaults(func=run)


def scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    text = str(value)
    needs_quotes = (not _PLAIN.fullmatch(text) or text.lower() in _RESERVED
                    or text != text.strip() or ": " in text or text.endswith(":")
                    or re.fullmatch(r"[-+]?(\d[\d_]*(\.\d*)?|\.\d+)([eE][-+]?\d+)?", text)
                    is not None)
    return json.dumps(text, ensure_ascii=False) if needs_quotes else text


def _items(value: Any) -> list[tuple[str, Any]]:
    return list(value.fields) if isinstance(value, Struct) else sorted(value.items())


def to_yaml(value: Any, indent: int = 0) -> list[str]:
    """Block YAML lines of a Struct / dict / list / scalar, four spaces a level."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, (Struct, dict)):
        items = _items(value)
        if not items:
            return [pad + "{}"]
        for key, v in items:
            if isinstance(v, (Struct, dict, list)) and (_items(v) if not isinstance(v, list)
                                                        else v):
                lines.append(f"{pad}{scalar(key)}:")
                lines += to_yaml(v, indent + 4)
            elif isinstance(v, list):
                lines.append(f"{pad}{scalar(key)}: []")
            elif isinstance(v, (Struct, dict)):
                lines.append(f"{pad}{scalar(key)}: {{}}")
            else:
                lines.append(f"{pad}{scalar(key)}: {scalar(v)}")
        return lines
    if isinstance(value, list):
        for v in value:
            sub = to_yaml(v, indent + 2)
            first = sub[0][indent + 2:]
            lines.append(f"{pad}- {first}")
            lines += sub[1:]
        return lines
    return [pad + scalar(value)]


def run(args: argparse.Namespace) -> int:
    from builder.config import config_struct, load_config

    cfg = load_config(args.config, args.workdir)
    print("\n".join(to_yaml(config_struct(cfg, list(cfg.archs), list(cfg.contents.packages)))))
    return 0
