"""Version comparison and constraints: apk-tools' test-data facts plus order properties."""

from __future__ import annotations

import functools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from builder.apk.version import (
    Constraint,
    compare_versions,
    is_valid_version,
    parse_constraint,
)
from builder.errors import FormatError

# Orderings asserted by apk-tools' test/version.data (a selection covering every rule).
APK_VERSION_FACTS = """
2.34 > 0.1.0_alpha
23_foo > 4_beta
1.0 < 1.0bc
0.1.0_alpha = 0.1.0_alpha
0.1.0_alpha2 > 0.1.0_alpha
0.1.0_alpha < 2.2.39-r1
1.0.4-r3 < 1.0.4-r4
1.1 > 1.1_alpha1
1.2.1 > 1.2
1.2 < 1.3_alpha
0.7.0 < 0.8_beta1
3.10.18-r1 > 2.3.0b-r1
2.3.0b-r1 < 2.3.0b-r2
0.12.3 > 0.12
1.2.12.1 < 1.2.13
3.1_p16 < 3.1_p17
1.06-r6 < 006
006 > 1.0.0
1.2.2-r1 > 1.2.2
2.01.01_alpha10 > 0.94
1.0 > 0.99.3.20040818
20050718-r1 < 20050718-r2
1.00_beta2 > 0.9.2
7.15.1-r1 > 1.02
4.2.52_p2-r1 < 4.2.52_p4-r2
2.5.1-r8 < 2.5.1a-r1
3.0.0-r2 < 021109-r3
3.9_pre20060124 > 0.01
0.01 < 0.06
1.1.7 < 6b-r7
0.10.0-r1 > 0.10.0
0.10.0 < 0.10.1_rc1
2.0.2 > 1.1a
0.15.1b-r2 > 0.15.1b
22.7-r1 < 22.7.3-r1
2.1_pre20 < 2.1_pre26
2.10.1 > 02.08.01b
02.08.01b < 4.77
8.1.2.20050715-r1 < 20030215
1.6d > 1.2.07.8
1.2.07.8 < 1.2.12.04
1.07-r1 < 1.07.5
1.07.5 > 1.07
0.1_pre20060810 < 0.1_pre20060817
0.59s-r11 < 0.65
0.20070118 < 0.20070207_rc1
4.01 < 4.20
3.7_p1 > 1.3
4.5_p1-r1 > 4.5_p1
0.9.8c-r1 < 0.9.8d
1.7 < 1.7b
1.8.5 < 1.8.5_p2
2.9.11_pre20051101-r3 > 2.9.11_pre20051101
1.6.8_p12-r1 > 1.6.8_p9-r2
0.9.28.1 < 087-r1
104-r11 > 104-r9
1.2.5_rc2 > 0.1
20040406-r1 > 2.12r-r4
2.12r-r4 < 2.12r-r5
7.0.17 < 7.0.174
1.3-r0 < 1.3.1-r0
1.3_pre1-r1 < 1.3.2
1.0_p10-r0 > 1.0_p9-r0
0.1.0_alpha_pre2 < 0.1.0_alpha
1.0.0_pre20191002222144-r0 < 1.0.0_pre20210530193627-r0
"""
FACTS = [tuple(line.split()) for line in APK_VERSION_FACTS.strip().splitlines()]
SIGN = {"<": -1, "=": 0, ">": 1}


@pytest.mark.parametrize("a,op,b", FACTS, ids=[" ".join(f) for f in FACTS])
def test_apk_version_data(a: str, op: str, b: str) -> None:
    assert compare_versions(a, b) == SIGN[op]
    assert compare_versions(b, a) == -SIGN[op]


@pytest.mark.parametrize(
    "version,valid",
    [("1.2.3_rc1-r0", True), ("1.0bc", False), ("1.0b2", False), ("1.2_foo", False),
     ("1.2-r", False), ("1.2-x1", False), ("", False), ("a1", False), ("1.2.", False),
     ("1.2~0abc-r3", True), ("1.0_alpha_pre2", True), ("2.12r-r4", True), ("1_p", True)],
)
def test_validity(version: str, valid: bool) -> None:
    assert is_valid_version(version) is valid


def test_invalid_versions_sort_below_valid_continuations() -> None:
    assert compare_versions("1.0bc", "1.0b") == -1  # invalid tail < end of string
    assert compare_versions("1.0bc", "1.0bd") == 0  # both invalid at the same spot
    assert compare_versions("1.2_foo", "1.2") == -1


# -- generated valid versions --------------------------------------------------------------

_num = st.integers(min_value=0, max_value=30).map(str)
_component = st.one_of(_num, st.sampled_from(["0", "00", "01", "007", "10"]))
_suffix = st.tuples(
    st.sampled_from(["alpha", "beta", "pre", "rc", "cvs", "svn", "git", "hg", "p"]),
    st.one_of(st.just(""), _num),
).map(lambda t: f"_{t[0]}{t[1]}")


@st.composite
def versions(draw: st.DrawFn) -> str:
    text = draw(_num) + "".join("." + c for c in draw(st.lists(_component, max_size=3)))
    if draw(st.booleans()):
        text += draw(st.sampled_from("abz"))
    text += "".join(draw(st.lists(_suffix, max_size=2)))
    if draw(st.integers(0, 4)) == 0:
        text += "~" + draw(st.sampled_from(["0ab", "1f", "ff"]))
    if draw(st.booleans()):
        text += "-r" + draw(_num)
    return text


@settings(max_examples=400, deadline=None)
@given(versions())
def test_generated_versions_are_valid_and_reflexive(v: str) -> None:
    assert is_valid_version(v)
    assert compare_versions(v, v) == 0


@settings(max_examples=400, deadline=None)
@given(versions(), versions())
def test_antisymmetric(a: str, b: str) -> None:
    assert compare_versions(a, b) == -compare_versions(b, a)


@settings(max_examples=600, deadline=None)
@given(versions(), versions(), versions())
def test_transitive(a: str, b: str, c: str) -> None:
    x, y, z = sorted([a, b, c], key=functools.cmp_to_key(compare_versions))
    assert compare_versions(x, y) <= 0 and compare_versions(y, z) <= 0
    assert compare_versions(x, z) <= 0
    if compare_versions(x, y) == 0 and compare_versions(y, z) == 0:
        assert compare_versions(x, z) == 0


@settings(max_examples=300, deadline=None)
@given(versions())
def test_revision_and_suffix_rules(v: str) -> None:
    base = v.split("-r")[0]
    assert compare_versions(base + "-r1", base) == 1
    if "~" not in base:
        assert compare_versions(base + "_rc1", base) == -1
        assert compare_versions(base + "_p1", base) == 1


# -- constraints ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,expected",
    [
        ("a", Constraint("a")),
        ("a=1.2", Constraint("a", "=", "1.2")),
        ("!b>1", Constraint("b", ">", "1", conflict=True)),
        ("a@testing", Constraint("a", tag="testing")),
        ("a@testing>=3", Constraint("a", ">=", "3", "testing")),
        ("a>=3@testing", Constraint("a", ">=", "3", "testing")),  # apko's order
        ("a=~1.2", Constraint("a", "~", "1.2")),
        ("a>~2.5", Constraint("a", ">~", "2.5")),
        ("so:libc.musl-x86_64.so.1", Constraint("so:libc.musl-x86_64.so.1")),
        ("cmd:sh=1.37.0-r23", Constraint("cmd:sh", "=", "1.37.0-r23")),
        ("/bin/sh", Constraint("/bin/sh")),
        ("foo><Q1abc=", Constraint("foo", "><", "Q1abc=")),
    ],
)
def test_parse_constraint(text: str, expected: Constraint) -> None:
    assert parse_constraint(text) == expected


@pytest.mark.parametrize("text", ["foo==", "foo=", "foo=invalid", "foo<>=1", "@x", "", "a@t@u"])
def test_parse_constraint_errors(text: str) -> None:
    with pytest.raises(FormatError, match="not a valid dependency"):
        parse_constraint(text)


@pytest.mark.parametrize(
    "text,version,hit",
    [
        ("a", "1", True), ("a", None, True),
        ("a=1.2", "1.2", True), ("a=1.2", "1.2-r0", False), ("a=1.2", None, False),
        ("a<2", "1.9", True), ("a<2", "2", False), ("a<=2", "2", True),
        ("a>2", "2_p1", True), ("a>2", "2_rc1", False), ("a>=2", "2", True),
        ("a~2.2", "2.2", True), ("a~2.2", "2.2.1", True), ("a~2.2", "2.2-r3", True),
        ("a~2.2", "2.10", False), ("a~2.2", "2.20", False), ("a~2.4", "2.10", False),
        ("a>~2.5", "2.10", True), ("a>~2.5", "2.5.1", True), ("a>~2.5", "2.4", False),
        ("a<~2.5", "2.5.9", True), ("a<~2.5", "2.6", False),
    ],
)
def test_matches(text: str, version: str | None, hit: bool) -> None:
    c = parse_constraint(text)
    assert c.matches(version) is hit
    assert parse_constraint("!" + text).allows(version) is (not hit)


def test_checksum_pin() -> None:
    c = parse_constraint("foo><Q1abc=")
    assert c.matches("1.0", checksum="Q1abc=")
    assert not c.matches("1.0", checksum="Q1xyz=")
    assert str(c) == "foo><Q1abc="
