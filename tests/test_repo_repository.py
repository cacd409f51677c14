"""Repository line parsing and URL construction."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.apk.model import Package
from builder.errors import ConfigError
from builder.repo.repository import Repository, parse_repositories, parse_repository

PKG = Package(name="replayout", version="1.0.0-r0")


def test_plain_path_trailing_slash_trimmed() -> None:
    repo = parse_repository("./testdata/packages/")
    assert repo == Repository(url="./testdata/packages", tag="")
    assert not repo.is_remote
    assert repo.scheme == ""
    assert repo.local_path == Path("testdata/packages")
    assert repo.index_url("x86_64") == "./testdata/packages/x86_64/APKINDEX.tar.gz"
    assert repo.package_url(PKG, "x86_64") == "./testdata/packages/x86_64/replayout-1.0.0-r0.apk"


def test_https_repository() -> None:
    repo = parse_repository("https://packages.wolfi.dev/os//")
    assert repo.url == "https://packages.wolfi.dev/os"
    assert repo.is_remote and repo.scheme == "https"
    assert repo.index_url("aarch64") == "https://packages.wolfi.dev/os/aarch64/APKINDEX.tar.gz"
    plus = Package(name="libstdc++", version="13.2.0-r0")
    assert repo.package_url(plus, "x86_64") == (
        "https://packages.wolfi.dev/os/x86_64/libstdc%2B%2B-13.2.0-r0.apk"
    )
    with pytest.raises(ValueError):
        _ = repo.local_path


def test_tagged_repository() -> None:
    repo = parse_repository("@edge  http://127.0.0.1:8080/alpine/edge/main/")
    assert repo.tag == "edge"
    assert repo.url == "http://127.0.0.1:8080/alpine/edge/main"
    assert str(repo) == "@edge http://127.0.0.1:8080/alpine/edge/main"
    local = parse_repository("@local /srv/repo")
    assert (local.tag, local.url, local.local_path) == ("local", "/srv/repo", Path("/srv/repo"))


def test_file_url() -> None:
    repo = parse_repository("file:///srv/my%20repo/")
    assert repo.scheme == "file" and not repo.is_remote
    assert repo.local_path == Path("/srv/my repo")
    assert repo.index_url("x86_64") == "file:///srv/my%20repo/x86_64/APKINDEX.tar.gz"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty repository"),
        ("@edge", "without a URL"),
        ("@bad!tag https://x/y", "invalid repository tag"),
        ("ftp://host/repo", "unsupported repository scheme 'ftp'"),
        ("https:///nohost", "has no host"),
        ("/a b", "contains whitespace"),
    ],
)
def test_bad_repository_lines(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as info:
        parse_repository(text, source="apko.yaml:7")
    assert str(info.value).startswith("apko.yaml:7")


def test_file_url_with_host_is_rejected() -> None:
    with pytest.raises(ConfigError, match="with a host"):
        _ = parse_repository("file://otherhost/srv").local_path


def test_parse_repositories_skips_comments_and_duplicates() -> None:
    repos = parse_repositories(
        ["# comment", "", "/srv/a/", "/srv/a", "@t /srv/a", "https://h/r"]
    )
    assert [str(r) for r in repos] == ["/srv/a", "@t /srv/a", "https://h/r"]
