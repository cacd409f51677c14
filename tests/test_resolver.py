"""resolve(): semantics on small hand-made indexes and a real Alpine 3.16 index."""

from __future__ import annotations

import tarfile
import time

import pytest

from builder.apk.model import Package, parse_index_text
from builder.apk.version import parse_constraint
from builder.errors import ResolveError
from builder.resolve import resolve
from tests.helpers import FIXTURES


def pkg(name: str, version: str = "1", *, deps: str = "", provides: str = "", iif: str = "",
        prio: int | None = None, tag: str = "", repo: str = "main", arch: str = "") -> Package:
    return Package(name=name, version=version, depends=deps.split(), provides=provides.split(),
                   install_if=iif.split(), provider_priority=prio, repository_tag=tag,
                   repository=repo, arch=arch)


def names(result: list[Package]) -> list[str]:
    return [str(p) for p in result]


def test_highest_version_and_deps_first() -> None:
    index = [pkg("a", "1", deps="b"), pkg("a", "2", deps="b c"), pkg("b", "1"),
             pkg("b", "1.10"), pkg("b", "1.9"), pkg("c", "3", deps="b")]
    assert names(resolve(["a"], index)) == ["b-1.10", "c-3", "a-2"]


def test_backtracks_when_greedy_choice_conflicts() -> None:
    index = [pkg("app", "2", deps="lib>=2 tool"), pkg("app", "1", deps="lib tool"),
             pkg("lib", "1"), pkg("lib", "2"), pkg("tool", "1", deps="lib<2")]
    assert names(resolve(["app"], index)) == ["lib-1", "tool-1", "app-1"]


def test_virtuals_so_cmd_pc_with_and_without_versions() -> None:
    index = [
        pkg("curl", deps="so:libcurl.so.4 cmd:sh pc:zlib>=1.2"),
        pkg("libcurl", "8.0", provides="so:libcurl.so.4=4.8.0"),
        pkg("libcurl", "7.0", provides="so:libcurl.so.4=4.7.0"),
        pkg("busybox-binsh", provides="cmd:sh", prio=100),
        pkg("dash-binsh", provides="cmd:sh", prio=60),
        pkg("zlib-dev", "1.2.12", provides="pc:zlib=1.2.12"),
        pkg("zlib-dev-old", "1.1", provides="pc:zlib=1.1"),
    ]
    assert names(resolve(["curl"], index)) == [
        "libcurl-8.0", "busybox-binsh-1", "zlib-dev-1.2.12", "curl-1"]
    # an explicitly requested provider satisfies the virtual
    assert "dash-binsh-1" in names(resolve(["curl", "dash-binsh"], index))
    assert "busybox-binsh-1" not in names(resolve(["curl", "dash-binsh"], index))


def test_virtual_without_priority_needs_explicit_choice() -> None:
    index = [pkg("user", deps="mailer"), pkg("postfix", provides="mailer"),
             pkg("exim", provides="mailer")]
    with pytest.raises(ResolveError, match="world requires user, user-1 requires mailer: "
                       "mailer is a virtual package provided by postfix-1, exim-1"):
        resolve(["user"], index)
    assert names(resolve(["user", "exim"], index)) == ["exim-1", "user-1"]
    # a sole provider is taken (apk-tools 2.x, apko), but not under apk-tools 3's rule
    sole = [pkg("avahi", deps="/bin/sh"), pkg("busybox", provides="/bin/sh")]
    assert names(resolve(["avahi"], sole)) == ["busybox-1", "avahi-1"]
    with pytest.raises(ResolveError, match="request one of them explicitly"):
        resolve(["avahi"], sole, strict_virtuals=True)


def test_conflicts_and_versioned_provides_occupy_names() -> None:
    index = [pkg("a", deps="!b>1"), pkg("b", "1"), pkg("b", "2"),
             pkg("s1", provides="svc=1"), pkg("s2", provides="svc=2")]
    assert names(resolve(["a", "b"], index)) == ["b-1", "a-1"]
    with pytest.raises(ResolveError, match="b>1"):
        resolve(["a", "b>1"], index)
    with pytest.raises(ResolveError, match="svc is already provided by s1-1"):
        resolve(["s1", "s2"], index)
    with pytest.raises(ResolveError, match="excluded by world"):
        resolve(["b>1", "!b"], index)


def test_install_if_and_pins() -> None:
    index = [
        pkg("app", deps="lib"), pkg("lib"), pkg("docs"),
        pkg("app-doc", deps="app", iif="app docs"),
        pkg("app-nox", iif="app !x11"), pkg("x11"),
        pkg("lib", "9", repo="edge", tag="edge"),
        pkg("app", "9", deps="lib", repo="edge", tag="edge"),
    ]
    assert names(resolve(["app"], index)) == ["lib-1", "app-1", "app-nox-1"]
    assert names(resolve(["docs", "app", "x11"], index)) == [
        "lib-1", "app-1", "docs-1", "app-doc-1", "x11-1"]
    pinned = resolve(["app@edge"], index)
    # the pin allows edge for app's dependencies, but the untagged lib stays preferred
    assert [(p.name, p.version, p.repository_tag) for p in pinned] == [
        ("lib", "1", ""), ("app", "9", "edge"), ("app-nox", "1", "")]
    with pytest.raises(ResolveError, match=r"only in repository @edge \(ask for lib@edge\)"):
        resolve(["lib>1"], index)


def test_arch_and_broken_packages() -> None:
    index = [pkg("a", arch="aarch64"), pkg("b", deps="c@tag"), pkg("c"), pkg("d", arch="noarch")]
    assert names(resolve(["a"], index)) == ["a-1"]
    with pytest.raises(ResolveError, match="built for arch aarch64, not x86_64"):
        resolve(["a"], index, "x86_64")
    with pytest.raises(ResolveError, match="uninstallable"):
        resolve(["b"], index)
    assert names(resolve(["d"], index, "x86_64")) == ["d-1"]


def test_error_names_the_chain() -> None:
    index = [pkg("foo", "1.0-r0", deps="so:libbar.so.1"), pkg("top", deps="foo")]
    with pytest.raises(ResolveError) as exc:
        resolve(["top"], index)
    assert str(exc.value) == ("world requires top, top-1 requires foo, foo-1.0-r0 requires "
                              "so:libbar.so.1: no provider")
    with pytest.raises(ResolveError, match="world: 'foo=bad' is not a valid dependency"):
        resolve(["foo=bad"], index)


def test_world_order_option() -> None:
    index = [pkg("zed"), pkg("alpha")]
    assert names(resolve(["zed", "alpha"], index)) == ["alpha-1", "zed-1"]
    assert names(resolve(["zed", "alpha"], index, sort_world=False)) == ["zed-1", "alpha-1"]


def test_deterministic() -> None:
    index = [pkg("a", deps="v"), pkg("p1", provides="v=1"), pkg("p2", provides="v=1")]
    first = names(resolve(["a"], index))
    assert first == ["p1-1", "a-1"]
    assert all(names(resolve(["a"], index)) == first for _ in range(5))


# -- a real index ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def alpine_316() -> tuple[list[Package], float]:
    path = FIXTURES / "indexes" / "alpine-v3.16-main-x86_64.APKINDEX.tar.gz"
    start = time.perf_counter()
    with tarfile.open(path) as tf:
        member = tf.extractfile("APKINDEX")
        assert member is not None
        packages = parse_index_text(member.read().decode(), source=str(path))
    return packages, time.perf_counter() - start


def _assert_deps_first(result: list[Package]) -> None:
    position = {id(p): i for i, p in enumerate(result)}
    provides: dict[str, list[tuple[Package, str | None]]] = {}
    for p in result:
        provides.setdefault(p.name, []).append((p, p.version))
        for entry in p.provides:
            c = parse_constraint(entry)
            provides.setdefault(c.name, []).append((p, c.version or None))
    for p in result:
        for dep in map(parse_constraint, p.depends):
            if dep.conflict:
                assert not any(dep.matches(v) for q, v in provides.get(dep.name, ()) if q is not p)
                continue
            sat = [q for q, v in provides.get(dep.name, ()) if dep.matches(v)]
            assert sat, f"{p} requires {dep}: not in the result"
            assert any(q is p or position[id(q)] < position[id(p)] for q in sat), (
                f"{p} is installed before its dependency {dep}")


def test_alpine_base_curl_strace(alpine_316: tuple[list[Package], float]) -> None:
    packages, parse_seconds = alpine_316
    start = time.perf_counter()
    result = resolve(["alpine-base", "curl", "strace"], packages, "x86_64")
    resolve_seconds = time.perf_counter() - start
    print(f"\nalpine v3.16 main: {len(packages)} packages parsed in {parse_seconds:.3f}s, "
          f"world resolved to {len(result)} packages in {resolve_seconds:.3f}s")
    got = {p.name: p.version for p in result}
    for name in ("musl", "busybox", "libcurl", "curl", "strace", "apk-tools", "alpine-baselayout",
                 "openrc", "libcrypto1.1", "zlib", "ca-certificates-bundle"):
        assert name in got, name
    assert got["curl"] == "7.83.1-r4" and got["musl"] == "1.2.3-r2"
    assert len(got) == len(result)  # one version per name
    assert result[0].name == "alpine-baselayout-data"
    _assert_deps_first(result)
    assert resolve_seconds < 10
