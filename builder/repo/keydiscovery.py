"""Finding the signing keys of repositories over the network, as apko's `install-keys` does.

Two sources, both followed for every remote repository:

- **Alpine releases**: a repository URL of the form `<scheme>://<host>/.../alpine/<branch>/<repo>`
  names an Alpine branch (`v3.21`, `edge`). Alpine's `releases.json` lists, per release
  branch and architecture, the URLs of the keys that sign it, each with an optional
  `deprecated_since` date; the keys not deprecated by today are fetched (without the
  repository's credentials), each named after the last part of its URL. Alpine publishes
  some URLs with `%20` where `@` was meant; that is corrected, as apko corrects it.
- **Key discovery** (Chainguard's style): `<repository>/apk-configuration` is a JSON object
  whose `jwks_uri` names a JSON Web Key Set; each RSA key in it becomes `<kid>.rsa.pub`, a
  PEM `PUBLIC KEY`. A 404 means the repository does not offer discovery.

Keys are sorted by name then bytes, exact duplicates dropped, and a name that two different
keys share gets `-2`, `-3`... before `.rsa.pub` (apko's rule). A key's name comes from the
network, so it must be a plain file name; its bytes must parse as a public key. Anything
else is refused naming the URL.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from builder.errors import FetchError, VerificationError

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)

ALPINE_RELEASES_URL = "https://alpinelinux.org/releases.json"
_ALPINE_REPO = re.compile(r"^https?://.+/alpine/([^/]+)/[^/]+$")
_MAX_DOCUMENT = 4 * 1024 * 1024  # releases.json is ~40 KiB; a key set far less


@dataclass(frozen=True)
class DiscoveredKey:
    name: str  # file name under etc/apk/keys
    pem: bytes
    url: str  # where it came from


Get = Callable[[str, bool], "requests.Response"]


def alpine_branch(repository: str) -> str | None:
    """The Alpine release branch a repository URL names (`v3.21`), or None."""
    m = _ALPINE_REPO.match(repository.rstrip("/"))
    return m.group(1) if m else None


def discover_keys(repositories: Iterable[str], arch: str, get: Get,
                  releases_url: str = ALPINE_RELEASES_URL,
                  today: dt.date | None = None) -> list[DiscoveredKey]:
    """The keys that sign `repositories` (remote ones; local paths are skipped) for the APK
    architecture `arch`. `get(url, authenticated)` performs one GET."""
    remote = [r.rstrip("/") for r in repositories if r.startswith(("http://", "https://"))]
    branches = sorted({b for r in remote if (b := alpine_branch(r)) is not None})
    keys: list[DiscoveredKey] = []
    if branches:
        for url in alpine_key_urls(get, releases_url, branches, arch, today or dt.date.today()):
            keys.append(DiscoveredKey(_name_from_url(url), _public_pem(_get_body(get, url, False),
                                                                       url), url))
    for repo in remote:
        keys.extend(_discovered(get, repo + "/apk-configuration"))
    return dedupe(keys)


def alpine_key_urls(get: Get, releases_url: str, branches: list[str], arch: str,
                    today: dt.date) -> list[str]:
    """Key URLs of each Alpine branch for `arch` not deprecated by `today`."""
    doc = _json(_get_body(get, releases_url, False), releases_url)
    wanted = {b: None for b in branches}
    urls: list[str] = []
    for branch in _list(doc, "release_branches", releases_url):
        if not isinstance(branch, dict) or branch.get("rel_branch") not in wanted:
            continue
        keyset = branch.get("keys") or {}
        if not isinstance(keyset, dict):
            raise FetchError(f"{releases_url}: release branch {branch.get('rel_branch')}: "
                             "keys is not an object")
        for entry in keyset.get(arch) or []:
            if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
                raise FetchError(f"{releases_url}: release branch {branch['rel_branch']}: "
                                 f"a key of {arch} has no url")
            since = entry.get("deprecated_since") or ""
            if since and _date(since, releases_url) <= today:
                continue
            urls.append(entry["url"].replace("%20", "@"))
    if not urls:
        raise FetchError(f"{releases_url}: no keys for arch {arch} in release branches "
                         f"{', '.join(branches)}")
    return urls


def dedupe(keys: list[DiscoveredKey]) -> list[DiscoveredKey]:
    """Sorted by (name, bytes), exact duplicates dropped, clashing names numbered."""
    out: list[DiscoveredKey] = []
    previous: tuple[str, bytes] | None = None
    clash = 1
    for key in sorted(keys, key=lambda k: (k.name, k.pem)):
        if previous == (key.name, key.pem):
            continue
        if previous is not None and previous[0] == key.name:
            clash += 1
            stem = key.name.removesuffix(".rsa.pub")
            name = f"{stem}-{clash}.rsa.pub" if key.name.endswith(".rsa.pub") \
                else f"{key.name}-{clash}"
            out.append(DiscoveredKey(name, key.pem, key.url))
        else:
            clash = 1
            out.append(key)
        previous = (key.name, key.pem)
    return out


def _discovered(get: Get, discovery_url: str) -> list[DiscoveredKey]:
    resp = get(discovery_url, True)
    with resp:
        if resp.status_code == 404:
            log.debug("%s: no key discovery (404)", discovery_url)
            return []
        if resp.status_code != 200:
            raise FetchError(f"{discovery_url}: key discovery failed: HTTP {resp.status_code} "
                             f"{resp.reason}")
        doc = _json(_read(resp, discovery_url), discovery_url)
    jwks_uri = doc.get("jwks_uri") if isinstance(doc, dict) else None
    if not isinstance(jwks_uri, str) or not jwks_uri:
        raise FetchError(f"{discovery_url}: no jwks_uri")
    keyset = _json(_get_body(get, jwks_uri, True), jwks_uri)
    base = discovery_url.removesuffix("/apk-configuration")
    out = []
    for jwk in _list(keyset, "keys", jwks_uri):
        kid = jwk.get("kid") if isinstance(jwk, dict) else None
        if not isinstance(kid, str) or not kid:
            raise FetchError(f'{jwks_uri}: key missing "kid"')
        name = _check_name(kid + ".rsa.pub", jwks_uri)
        out.append(DiscoveredKey(name, _jwk_pem(jwk, jwks_uri), f"{base}/{name}"))
    return out


def _jwk_pem(jwk: dict, where: str) -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    if jwk.get("kty") != "RSA":
        raise FetchError(f"{where}: key {jwk.get('kid')}: kty {jwk.get('kty')!r}, not RSA")
    try:
        n = int.from_bytes(_b64url(jwk["n"]), "big")
        e = int.from_bytes(_b64url(jwk["e"]), "big")
        key = rsa.RSAPublicNumbers(e, n).public_key()
    except (KeyError, TypeError, ValueError) as exc:
        raise FetchError(f"{where}: key {jwk.get('kid')}: not an RSA public key ({exc})") \
            from None
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def _public_pem(data: bytes, url: str) -> bytes:
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        load_pem_public_key(data)
    except ValueError:
        raise VerificationError(f"{url}: not a PEM public key") from None
    return data


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _name_from_url(url: str) -> str:
    from urllib.parse import unquote, urlsplit

    return _check_name(unquote(urlsplit(url).path.rsplit("/", 1)[-1]), url)


def _check_name(name: str, where: str) -> str:
    """A key's file name from the network: one plain path component."""
    if not name or name in (".", "..") or "/" in name or "\0" in name or name.startswith("."):
        raise FetchError(f"{where}: key name {name!r} is not a plain file name")
    return name


def _get_body(get: Get, url: str, authenticated: bool) -> bytes:
    resp = get(url, authenticated)
    with resp:
        if resp.status_code != 200:
            raise FetchError(f"{url}: HTTP {resp.status_code} {resp.reason}")
        return _read(resp, url)


def _read(resp: requests.Response, url: str) -> bytes:
    body = b""
    for chunk in resp.iter_content(64 * 1024):
        body += chunk
        if len(body) > _MAX_DOCUMENT:
            raise FetchError(f"{url}: larger than {_MAX_DOCUMENT} bytes")
    return body


def _json(data: bytes, url: str) -> object:
    try:
        return json.loads(data)
    except ValueError as exc:
        raise FetchError(f"{url}: not JSON ({exc})") from None


def _list(doc: object, key: str, url: str) -> list:
    value = doc.get(key) if isinstance(doc, dict) else None
    if not isinstance(value, list):
        raise FetchError(f"{url}: no {key} list")
    return value


def _date(text: str, url: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise FetchError(f"{url}: deprecated_since {text!r} is not YYYY-MM-DD") from None
