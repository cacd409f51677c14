"""Go encoding/json compatibility: escaping, number formatting, map/struct ordering."""

from __future__ import annotations

import gzip
import io
import json
import tarfile

import pytest

from builder.errors import FormatError
from builder.gojson import Raw, Struct, dumps, dumps_encoder, encode_string, format_float
from tests.helpers import GOLDEN

GOLDEN_DIR = GOLDEN / "golden"


def _as_structs(text: bytes) -> object:
    """Parse JSON keeping every object's key order, as Go structs would serialise it."""
    return json.loads(text, object_pairs_hook=Struct)


@pytest.mark.parametrize(
    "blob",
    [
        "6c815259150f37d000417f9a93f41bddf74dff905c745986069d4b03e954ac1d",
        "69f0237c7f8cf0b8a329d1bf1d6870c870c4ec323e39d3a6da59596632d0f2f4",
    ],
)
def test_golden_compact_blobs_reencode(blob: str) -> None:
    raw = (GOLDEN_DIR / "blobs" / "sha256" / blob).read_bytes()
    assert dumps(_as_structs(raw)) == raw


@pytest.mark.parametrize("name", ["sbom-x86_64.spdx.json", "sbom-index.spdx.json"])
def test_golden_sbom_indented_encoder_output(name: str) -> None:
    raw = (GOLDEN_DIR / "sboms" / name).read_bytes()
    assert b"\\u0026" in raw or name == "sbom-index.spdx.json"
    assert dumps_encoder(_as_structs(raw), indent="  ") == raw


def test_golden_etc_apko_json() -> None:
    blob = GOLDEN_DIR / "blobs" / "sha256" / (
        "c7557730da0e2d7fb242d8d1ac6dcf7e3a2439732aa5981270b4f3a02454b738"
    )
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob.read_bytes()))) as tf:
        raw = tf.extractfile("etc/apko.json").read()
    assert raw.endswith(b"}\n")
    assert dumps_encoder(_as_structs(raw)) == raw


def test_maps_sorted_structs_ordered_omitempty() -> None:
    s = Struct(
        [("z", 1), ("a", {"b": 1, "a": 2, "B": 3}), ("e", ""), ("l", []), ("n", None)],
        omitempty={"e", "l", "n"},
    )
    assert dumps(s) == b'{"z":1,"a":{"B":3,"a":2,"b":1}}'
    assert dumps(Struct([("s", Struct())], omitempty={"s"})) == b'{"s":{}}'  # structs stay
    assert dumps(Struct([("e", "")])) == b'{"e":""}'


@pytest.mark.parametrize(
    "text,expected",
    [
        ("a<b>&c", r'"a\u003cb\u003e\u0026c"'),
        ("\u2028\u2029", r'"\u2028\u2029"'),
        ('q"b\\', r'"q\"b\\"'),
        ("\n\r\t\b\f", r'"\n\r\t\b\f"'),
        ("\x00\x1f\x7f", '"\\u0000\\u001f\x7f"'),
        ("caf\u00e9 \u4e2d", '"caf\u00e9 \u4e2d"'),
        ("\ud800x", r'"\ufffdx"'),
        ("/", '"/"'),
    ],
)
def test_string_escaping(text: str, expected: str) -> None:
    assert encode_string(text) == expected


@pytest.mark.parametrize(
    "value,expected",
    [
        (1.0, "1"),
        (-2.5, "-2.5"),
        (0.1, "0.1"),
        (1e20, "100000000000000000000"),
        (1e21, "1e+21"),
        (1.5e-7, "1.5e-7"),
        (1e-6, "0.000001"),
        (1.234e-10, "1.234e-10"),
        (5e-324, "5e-324"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
        (12345678901234567890.0, "12345678901234567000"),
        (0.0, "0"),
    ],
)
def test_float_formatting(value: float, expected: str) -> None:
    assert format_float(value) == expected


def test_other_values_and_errors() -> None:
    assert dumps([True, False, None, 7, b"\x00\xff", Raw(b'{"x":1}')]) == (
        b'[true,false,null,7,"AP8=",{"x":1}]'
    )
    assert dumps({"k": []}, indent="  ") == b'{\n  "k": []\n}'
    assert dumps_encoder({"a": 1}) == b'{"a":1}\n'
    assert dumps("\u00e9") == "\"\u00e9\"".encode()
    with pytest.raises(FormatError):
        dumps(float("nan"))
    with pytest.raises(FormatError):
        dumps({1: 2})
    with pytest.raises(FormatError):
        dumps(object())
