"""Folded stacks, SVG flamegraph renderer, speedscope conversion, diffs (no builder needed)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from builder.errors import FormatError
from perf import flame

PROC = 'process 4242:"/w/.venv/bin/python -m builder.cli build /tmp/x/config.yaml t:l /tmp/o"'
TOP = f"{PROC};0x7f00 (libc.so.6);<module> (builder/cli.py:40)"
RAW = "\n".join([
    f"{TOP};main (builder/cli.py:30);compress_layer (builder/oci/compress.py:88);"
    "deflate (libz.so.1.2.13);0x7fa1 (libz.so.1.2.13);0x7fa2 (libz.so.1.2.13) 30",
    f"{TOP};main (builder/cli.py:31);fetch (builder/repo/fetch.py:12) 10",
    f"{TOP};main (builder/cli.py:30);compress_layer (builder/oci/compress.py:91);"
    "deflate (libz.so.1.2.13);0x7fa9 (libz.so.1.2.13) 5",
]) + "\n"


def test_parse_and_normalise():
    raw = flame.parse_folded(RAW)
    assert flame.total(raw) == 45
    norm = flame.normalise(raw)
    assert flame.total(norm) == 45
    # pid, line numbers and addresses are gone, so the two compress stacks merge
    assert len(norm) == 2
    stack = max(norm, key=norm.get)
    assert norm[stack] == 35
    frames = stack.split(";")
    assert frames[0] == "[builder.cli build]"
    assert "compress_layer (compress.py)" in frames
    assert frames[-1] == "[libz.so.1.2.13]"  # consecutive anonymous libz frames merged
    assert flame.frames_matching(norm, "compress_layer") == 35


def test_parse_rejects_garbage():
    with pytest.raises(FormatError, match="x.folded:2"):
        flame.parse_folded("a;b 3\nnot a folded line\n", source="x.folded")


def test_write_read_roundtrip(tmp_path):
    norm = flame.normalise(flame.parse_folded(RAW))
    flame.write_folded(norm, tmp_path / "p.folded")
    assert flame.read_folded(tmp_path / "p.folded") == norm


def _rects(svg: str) -> list[tuple[str, float]]:
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    out = []
    for g in root.iter(f"{ns}g"):
        title = g.find(f"{ns}title")
        rect = g.find(f"{ns}rect")
        if title is not None and rect is not None:
            out.append((title.text or "", float(rect.get("width"))))
    return out


def test_svg_widths_proportional_and_tooltips():
    folded = {"main;a": 75, "main;b": 25}
    svg = flame.render_svg(folded, title="t <&> x", width=1020)
    rects = _rects(svg)  # parses as XML: escaping works
    by_name = {t.split(" (")[0]: w for t, w in rects}
    assert by_name["all"] == pytest.approx(1000.0)
    assert by_name["main"] == pytest.approx(1000.0)
    assert by_name["a"] == pytest.approx(750.0)
    assert by_name["b"] == pytest.approx(250.0)
    assert any("75 samples, 75.00%" in t for t, _ in rects)
    # labels are drawn for wide frames, truncated with '..' when they do not fit
    long = flame.render_svg({"x" * 400 + ";y": 1}, width=300)
    assert ".." in long


def test_svg_drops_tiny_frames():
    svg = flame.render_svg({"big": 100000, "tiny": 1}, width=1000)
    names = [t.split(" (")[0] for t, _ in _rects(svg)]
    assert "big" in names and "tiny" not in names


def test_diff_colours_both_directions(tmp_path):
    base = {"main;compress": 50, "main;fetch": 50}
    head = {"main;compress": 150, "main;fetch": 50}
    svg = flame.render_svg(head, base=base)
    rects = {t.split(" (")[0]: t for t, _ in _rects(svg)}
    assert "change +" in rects["compress"]
    assert "change -" in rects["fetch"]  # normalised: fetch's share shrank
    fwd, rev = flame.render_diff_pair(base, head, tmp_path / "d", base_label="A",
                                      head_label="B")
    assert fwd.exists() and rev.exists()
    ET.fromstring(fwd.read_text())
    assert "rgb(230," in fwd.read_text()  # red-ish fill for growth


def test_speedscope_sampled_profile():
    norm = flame.normalise(flame.parse_folded(RAW))
    doc = flame.to_speedscope(norm, name="p")
    json.dumps(doc)
    prof = doc["profiles"][0]
    assert prof["type"] == "sampled"
    assert sum(prof["weights"]) == 45 == prof["endValue"]
    frames = doc["shared"]["frames"]
    assert len(prof["samples"]) == len(prof["weights"])
    assert all(0 <= i < len(frames) for s in prof["samples"] for i in s)
    names = {f["name"] for f in frames}
    assert "compress_layer" in names
    assert {"name": "compress_layer", "file": "compress.py"} in frames


def test_diff_folded_union():
    d = flame.diff_folded({"a": 1, "b": 2}, {"b": 3, "c": 4})
    assert d == {"a": (1, 0), "b": (2, 3), "c": (0, 4)}
