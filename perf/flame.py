"""Folded stacks (`frame;frame;frame count`) as the canonical profile: parse, normalise, diff,
and render them as an SVG flamegraph or a speedscope "sampled" profile.

py-spy's raw output is kept as the source of truth; everything else is derived from it, so a
profile can be re-rendered (or diffed against another commit) without profiling again.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

from builder.errors import FormatError

Folded = dict[str, int]

_PROCESS = re.compile(r'^process \d+:"(?P<cmd>[^"]*)"$')
_PYFRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]+):\d+\)$")
_ADDR = re.compile(r"^0x[0-9a-fA-F]+ \((?P<lib>[^()]+)\)$")
_THREAD = re.compile(r'^thread \(0x[0-9a-fA-F]+\)$')


def parse_folded(text: str, *, source: str = "<folded>") -> Folded:
    """Parse folded lines into {stack: samples}; repeated stacks are summed."""
    out: Folded = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.rstrip()
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            raise FormatError(f"{source}:{lineno}: not a folded-stack line (want 'a;b;c N')")
        out[stack] = out.get(stack, 0) + int(count)
    return out


def read_folded(path: str | Path) -> Folded:
    return parse_folded(Path(path).read_text(), source=str(path))


def write_folded(folded: Mapping[str, int], path: str | Path) -> None:
    lines = [f"{s} {c}" for s, c in sorted(folded.items()) if c > 0]
    Path(path).write_text("\n".join(lines) + ("\n" if lines else ""))


def _command_name(cmd: str) -> str:
    words = cmd.split()
    if not words:
        return "process"
    prog = words[0].rsplit("/", 1)[-1]
    # "python -m builder.cli build ..." / "apkimage build ..." -> keep the subcommand.
    if prog.startswith("python") and len(words) > 2 and words[1] == "-m":
        prog = words[2]
        rest = words[3:]
    else:
        rest = words[1:]
    sub = next((w for w in rest if not w.startswith("-")), "")
    return f"{prog} {sub}".strip()


def normalise_frame(frame: str) -> str:
    """Drop what differs between two runs of the same code: pids, temp paths in the command
    line, line numbers and raw addresses."""
    m = _PROCESS.match(frame)
    if m:
        return f"[{_command_name(m['cmd'])}]"
    m = _ADDR.match(frame)
    if m:
        return f"[{m['lib']}]"
    m = _PYFRAME.match(frame)
    if m:
        return f"{m['func']} ({m['file'].rsplit('/', 1)[-1]})"
    if _THREAD.match(frame):
        return "thread"
    return frame


def normalise(folded: Mapping[str, int]) -> Folded:
    out: Folded = {}
    for stack, count in folded.items():
        frames: list[str] = []
        for f in stack.split(";"):
            nf = normalise_frame(f)
            if frames and nf == frames[-1] and nf.startswith("["):
                continue  # consecutive anonymous frames of the same library: merge
            frames.append(nf)
        key = ";".join(frames)
        out[key] = out.get(key, 0) + count
    return out


def total(folded: Mapping[str, int]) -> int:
    return sum(folded.values())


def frames_matching(folded: Mapping[str, int], needle: str) -> int:
    """Samples whose stack has a frame containing `needle`."""
    return sum(c for s, c in folded.items() if any(needle in f for f in s.split(";")))


# --------------------------------------------------------------------------- tree + layout


@dataclass
class Node:
    name: str
    value: float = 0.0  # samples (head side for diffs)
    delta: float = 0.0  # head - normalised base (diffs only)
    children: dict[str, Node] = field(default_factory=dict)


def build_tree(weights: Iterable[tuple[str, float, float]]) -> Node:
    """Tree from (stack, value, delta) triples."""
    root = Node("all")
    for stack, value, delta in weights:
        node = root
        node.value += value
        node.delta += delta
        for frame in stack.split(";"):
            node = node.children.setdefault(frame, Node(frame))
            node.value += value
            node.delta += delta
    return root


def _colour(name: str) -> str:
    """Warm palette, stable per frame name (same name, same colour, across renders)."""
    h = hashlib.blake2b(name.encode(), digest_size=3).digest()
    r = 205 + h[0] % 50
    g = 80 + h[1] % 150
    b = h[2] % 55
    if name.startswith("["):  # native / library frames: cooler, so Python frames stand out
        r, g, b = 200 + h[0] % 40, 140 + h[1] % 60, 60 + h[2] % 40
    return f"rgb({r},{g},{b})"


def _diff_colour(delta: float, value: float, scale: float) -> str:
    if scale <= 0 or delta == 0:
        return "rgb(230,230,230)"
    strength = min(1.0, abs(delta) / scale)
    fade = int(230 - 200 * strength)
    return f"rgb(230,{fade},{fade})" if delta > 0 else f"rgb({fade},{fade},230)"


def render_svg(
    folded: Mapping[str, int],
    *,
    title: str = "Flame graph",
    subtitle: str = "",
    base: Mapping[str, int] | None = None,
    width: int = 1200,
    frame_height: int = 17,
    min_width_px: float = 0.3,
    unit: str = "samples",
) -> str:
    """SVG flamegraph: one rectangle per frame, width proportional to samples, root at the
    bottom, children sorted by name, a <title> tooltip per frame. With `base`, frames are
    coloured by the change from base (normalised to the same total) to `folded`: red grew,
    blue shrank."""
    weights: list[tuple[str, float, float]]
    if base is not None:
        bt, ht = total(base), total(folded)
        factor = ht / bt if bt else 0.0
        keys = set(folded) | set(base)
        weights = [(k, float(folded.get(k, 0)), folded.get(k, 0) - base.get(k, 0) * factor)
                   for k in keys]
    else:
        weights = [(k, float(v), 0.0) for k, v in folded.items()]
    root = build_tree(weights)
    pad_x, top = 10, 60
    depth = _max_depth(root)
    height = top + (depth + 1) * frame_height + 30
    inner = width - 2 * pad_x
    scale = inner / root.value if root.value else 0.0
    max_delta = max((abs(d) for _, _, d in weights), default=0.0)
    diff_scale = max(max_delta, root.value * 0.01)

    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" font-family="Verdana, sans-serif">',
        "<style>text{font-size:11px;fill:#000;pointer-events:none}"
        " rect:hover{stroke:#000;stroke-width:0.5}</style>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fdfdf8"/>',
        f'<text x="{width / 2}" y="22" text-anchor="middle" style="font-size:16px">'
        f"{escape(title)}</text>",
    ]
    if subtitle:
        out.append(f'<text x="{width / 2}" y="40" text-anchor="middle" style="fill:#555">'
                   f"{escape(subtitle)}</text>")

    def emit(node: Node, x: float, level: int) -> None:
        w = node.value * scale
        if w < min_width_px:
            return
        y = height - 30 - (level + 1) * frame_height
        pct = 100.0 * node.value / root.value if root.value else 0.0
        tip = f"{node.name} ({node.value:g} {unit}, {pct:.2f}%)"
        if base is not None:
            fill = _diff_colour(node.delta, node.value, diff_scale)
            tip += f" change {node.delta:+.1f} {unit}"
        else:
            fill = _colour(node.name)
        out.append(f"<g><title>{escape(tip)}</title>"
                   f'<rect x="{x:.2f}" y="{y}" width="{w:.2f}" height="{frame_height - 1}" '
                   f'fill="{fill}" rx="2"/>')
        max_chars = int((w - 6) / 6.5)
        if max_chars >= 3:
            label = node.name if len(node.name) <= max_chars else node.name[: max_chars - 2] + ".."
            out.append(f'<text x="{x + 3:.2f}" y="{y + frame_height - 5}">{escape(label)}</text>')
        out.append("</g>")
        cx = x
        for name in sorted(node.children):
            child = node.children[name]
            emit(child, cx, level + 1)
            cx += child.value * scale

    emit(root, pad_x, 0)
    legend = (f"{root.value:g} {unit}; width = share of {unit}"
              + ("; red = more than base, blue = less" if base is not None else ""))
    out.append(f'<text x="{pad_x}" y="{height - 10}" style="fill:#555">{escape(legend)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _max_depth(node: Node, level: int = 0) -> int:
    if not node.children:
        return level
    return max(_max_depth(c, level + 1) for c in node.children.values())


# --------------------------------------------------------------------------- speedscope


def to_speedscope(folded: Mapping[str, int], *, name: str = "profile",
                  unit: str = "none") -> dict:
    """speedscope file-format JSON with one "sampled" profile (stacks of frame indices plus
    weights)."""
    frames: list[dict] = []
    index: dict[str, int] = {}
    samples: list[list[int]] = []
    weights: list[int] = []
    for stack, count in sorted(folded.items()):
        if count <= 0:
            continue
        ids = []
        for f in stack.split(";"):
            if f not in index:
                index[f] = len(frames)
                m = _PYFRAME.match(f) or re.match(r"^(?P<func>.*) \((?P<file>[^()]+)\)$", f)
                frames.append({"name": m["func"], "file": m["file"]} if m else {"name": f})
            ids.append(index[f])
        samples.append(ids)
        weights.append(count)
    return {
        "$schema": "https://www.speedscope.app/file-format-schema.json",
        "shared": {"frames": frames},
        "profiles": [{
            "type": "sampled", "name": name, "unit": unit, "startValue": 0,
            "endValue": sum(weights), "samples": samples, "weights": weights,
        }],
        "name": name,
        "activeProfileIndex": 0,
        "exporter": "apkperf",
    }


def write_speedscope(folded: Mapping[str, int], path: str | Path, *, name: str) -> None:
    Path(path).write_text(json.dumps(to_speedscope(folded, name=name)))


# --------------------------------------------------------------------------- diff


def diff_folded(base: Mapping[str, int], head: Mapping[str, int]) -> dict[str, tuple[int, int]]:
    """{stack: (base samples, head samples)} over the union of stacks (difffolded's shape)."""
    return {k: (base.get(k, 0), head.get(k, 0)) for k in sorted(set(base) | set(head))}


def render_diff_pair(base: Mapping[str, int], head: Mapping[str, int], out_prefix: Path,
                     *, base_label: str, head_label: str) -> tuple[Path, Path]:
    """Both directions: widths from head coloured by head-base, and widths from base
    coloured by base-head (so frames that vanished in head stay visible)."""
    fwd = out_prefix.with_name(out_prefix.name + "-diff.svg")
    rev = out_prefix.with_name(out_prefix.name + "-diff-reverse.svg")
    fwd.write_text(render_svg(head, base=base, title=f"Differential: {head_label} vs {base_label}",
                              subtitle=f"widths: {head_label}; red = grew, blue = shrank "
                              "(sample counts normalised)"))
    rev.write_text(render_svg(base, base=head,
                              title=f"Differential (reverse): {base_label} vs {head_label}",
                              subtitle=f"widths: {base_label}; red = {base_label} spent more "
                              f"than {head_label}, blue = less"))
    return fwd, rev
