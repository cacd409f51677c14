"""An OCI distribution (registry v2) client that pushes our exact bytes.

* Blobs: HEAD to skip existing ones, cross-repo mount (`POST ?mount=&from=`), monolithic
  upload (`POST` then `PUT ?digest=`), or chunked upload (`PATCH` with `Content-Range`, then
  `PUT ?digest=`) above `chunk_threshold`. Files are streamed, never read whole.
* Manifests and indexes: `PUT` with the exact bytes and media type; the registry's
  `Docker-Content-Digest` must equal ours.
* Auth: anonymous, HTTP basic, or bearer tokens obtained from the realm named by the
  registry's `WWW-Authenticate` challenge; credentials come from `$DOCKER_CONFIG/config.json`
  (default `~/.docker/config.json`), `auths.<host>.auth` = base64("user:pass").
* `push_image` uploads all blobs concurrently (mounting those another repository of the
  registry holds, where it is told which), then the per-arch manifests, then the index under
  each tag, and reports what was uploaded, mounted or skipped.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import requests

from builder import faults
from builder.errors import RegistryError
from builder.oci.image import MEDIA_INDEX, MEDIA_MANIFEST, Blob, BuiltImage
from builder.oci.layout import BlobSource

DEFAULT_REGISTRY = "index.docker.io"
CHUNK_THRESHOLD = 64 << 20
CHUNK_SIZE = 16 << 20
_READ = 1 << 20
_TIMEOUT = 60

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPO_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class Reference:
    """`host[:port]/repo[:tag][@digest]`."""

    registry: str
    repository: str
    tag: str = ""
    digest: str = ""

    def __str__(self) -> str:
        s = f"{self.registry}/{self.repository}"
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s


def parse_reference(ref: str) -> Reference:
    """Parse an image reference; the first component is a registry host when it has a `.`
    or `:` or is `localhost`, else Docker Hub (with `library/` for one-component names)."""
    rest, digest = ref, ""
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not _DIGEST_RE.match(digest):
            raise RegistryError(f"image reference {ref!r}: bad digest {digest!r}")
    first, sep, remainder = rest.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, remainder
    else:
        registry, path = DEFAULT_REGISTRY, rest
    tag = ""
    last_slash = path.rfind("/")
    colon = path.rfind(":")
    if colon > last_slash:
        path, tag = path[:colon], path[colon + 1 :]
        if not _TAG_RE.match(tag):
            raise RegistryError(f"image reference {ref!r}: bad tag {tag!r}")
    if registry == DEFAULT_REGISTRY and "/" not in path:
        path = "library/" + path
    if not path or not _REPO_RE.match(path):
        raise RegistryError(f"image reference {ref!r}: bad repository name {path!r}")
    return Reference(registry, path, tag, digest)


@dataclass(frozen=True)
class Auth:
    """Credentials for one registry (basic user/password)."""

    username: str
    password: str


def docker_config_path() -> Path:
    base = os.environ.get("DOCKER_CONFIG")
    return (Path(base) if base else Path.home() / ".docker") / "config.json"


def load_docker_auth(host: str, config: Path | None = None) -> Auth | None:
    """Credentials for `host` from the docker config (`auths.<host>.auth`), or None."""
    path = config or docker_config_path()
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise RegistryError(f"{path}: cannot read docker config: {e}") from None
    auths = doc.get("auths") or {}
    candidates = [host, f"https://{host}", f"http://{host}"]
    if host in ("index.docker.io", "docker.io", "registry-1.docker.io"):
        candidates += ["https://index.docker.io/v1/", "index.docker.io", "docker.io"]
    for key in candidates:
        entry = auths.get(key) or auths.get(key.rstrip("/"))
        if not entry:
            continue
        if entry.get("auth"):
            try:
                user, _, pw = base64.b64decode(entry["auth"]).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                raise RegistryError(f"{path}: auths.{key}.auth is not base64 user:pass") from None
            return Auth(user, pw)
        if entry.get("username"):
            return Auth(entry["username"], entry.get("password", ""))
    return None


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.strip().partition(" ")
    params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    return scheme.lower(), params


@dataclass
class PushResult:
    index_digest: str
    manifest_digests: dict[str, str]  # OCI arch -> manifest digest
    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    mounted: list[str] = field(default_factory=list)
    manifests_skipped: list[str] = field(default_factory=list)  # present: HEAD, no PUT


class Registry:
    """A client for one registry. `base` is a URL (`http://127.0.0.1:5000`) or a host, in which
    case loopback hosts use http and others https. Thread-safe (one session per thread)."""

    def __init__(
        self,
        base: str,
        auth: Auth | None = None,
        *,
        chunk_threshold: int = CHUNK_THRESHOLD,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        if "://" not in base:
            host = base.split(":")[0]
            loopback = host in ("localhost", "127.0.0.1", "[::1]") or host.startswith("127.")
            base = ("http://" if loopback else "https://") + base
        self.base = base.rstrip("/")
        self.host = urlsplit(self.base).netloc
        self.auth = auth
        self.chunk_threshold = chunk_threshold
        self.chunk_size = chunk_size
        self._local = threading.local()
        self._lock = threading.Lock()
        self._tokens: dict[str, str] = {}  # scope -> Authorization header value
        self._basic_required = False

    @classmethod
    def for_host(cls, host: str, **kw: Any) -> Registry:
        """A client for `host` with credentials from the docker config, if any."""
        return cls(host, load_docker_auth(host), **kw)

    # -- plumbing -----------------------------------------------------------------------

    @property
    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
        return s

    def _basic_header(self) -> str:
        assert self.auth is not None
        raw = f"{self.auth.username}:{self.auth.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    def _auth_header(self, scope: str) -> str | None:
        with self._lock:
            if scope in self._tokens:
                return self._tokens[scope]
            if self._basic_required and self.auth:
                return self._basic_header()
        return None

    def _authenticate(self, resp: requests.Response, repo: str, scope: str) -> None:
        challenge = resp.headers.get("WWW-Authenticate", "")
        scheme, params = _parse_challenge(challenge)
        if scheme == "basic":
            if not self.auth:
                raise self._refused(resp, repo, "no credentials")
            with self._lock:
                self._basic_required = True
            return
        if scheme != "bearer" or "realm" not in params:
            raise self._refused(resp, repo, f"unsupported challenge {challenge!r}")
        query: dict[str, str | list[str]] = {"scope": scope.split(" ")}  # one param each
        if params.get("service"):
            query["service"] = params["service"]
        headers = {"Authorization": self._basic_header()} if self.auth else {}
        try:
            r = self._session.get(params["realm"], params=query, headers=headers,
                                  timeout=_TIMEOUT)
        except requests.RequestException as e:
            raise RegistryError(f"registry {self.host}: token endpoint failed: {e}") from None
        if r.status_code != 200:
            raise self._refused(r, repo, f"token endpoint {params['realm']} said {r.status_code}")
        body = r.json()
        token = body.get("token") or body.get("access_token")
        if not token:
            raise RegistryError(f"registry {self.host}: token endpoint returned no token")
        with self._lock:
            self._tokens[scope] = "Bearer " + token

    def _refused(self, resp: requests.Response, repo: str, why: str) -> RegistryError:
        creds = "with" if self.auth else "without"
        return RegistryError(
            f"registry {self.host}: access to repository {repo!r} refused "
            f"({resp.status_code} {resp.reason}; {why}; tried {creds} credentials from "
            f"{docker_config_path()})"
        )

    def _request(
        self,
        method: str,
        url: str,
        repo: str,
        *,
        push: bool = True,
        expect: tuple[int, ...] = (200,),
        body: Any = None,
        rewind: Any = None,
        headers: dict[str, str] | None = None,
        stream: bool = False,
        pull_also: str = "",
    ) -> requests.Response:
        """One request with auth handling: on 401, answer the challenge once and retry.
        `rewind` re-creates a streamed body for the retry; `stream` leaves the answer's body
        unread (the caller reads and closes it); `pull_also` names another repository the
        token must let us pull from (a mount's source)."""
        scope = f"repository:{repo}:pull,push" if push else f"repository:{repo}:pull"
        if pull_also and pull_also != repo:
            scope += f" repository:{pull_also}:pull"
        if url.startswith("/"):
            url = self.base + url
        for attempt in (0, 1):
            hdrs = dict(headers or {})
            auth = self._auth_header(scope)
            if auth:
                hdrs["Authorization"] = auth
            if method in ("POST", "PATCH", "PUT"):
                faults.point()  # crash tests: die before a request that changes the registry
            try:
                resp = self._session.request(method, url, data=body, headers=hdrs,
                                             timeout=_TIMEOUT, allow_redirects=True,
                                             stream=stream)
            except requests.RequestException as e:
                raise RegistryError(f"registry {self.host}: {method} {url} failed: {e}") from None
            if resp.status_code == 401 and attempt == 0:
                if auth and (auth.startswith("Basic") or scope in self._tokens):
                    raise self._refused(resp, repo, "credentials rejected")
                self._authenticate(resp, repo, scope)
                if rewind is not None:
                    body = rewind()
                continue
            if resp.status_code in (401, 403):
                raise self._refused(resp, repo, "credentials rejected")
            if resp.status_code not in expect:
                detail = resp.text[:300].strip().replace("\n", " ")
                raise RegistryError(
                    f"registry {self.host}: {method} {urlsplit(url).path} for {repo!r} "
                    f"returned {resp.status_code} (expected {expect}): {detail}"
                )
            return resp
        raise AssertionError("unreachable")

    def _location(self, resp: requests.Response) -> str:
        loc = resp.headers.get("Location")
        if not loc:
            raise RegistryError(f"registry {self.host}: upload response without Location")
        return urljoin(self.base + "/", loc)

    @staticmethod
    def _with_query(url: str, **params: str) -> str:
        return url + ("&" if "?" in url else "?") + urlencode(params)

    # -- API ----------------------------------------------------------------------------

    def ping(self) -> None:
        """Check the registry speaks v2 (401 is fine: auth happens per repository)."""
        try:
            r = self._session.get(self.base + "/v2/", timeout=_TIMEOUT)
        except requests.RequestException as e:
            raise RegistryError(f"registry {self.host}: cannot connect: {e}") from None
        if r.status_code not in (200, 401):
            raise RegistryError(f"registry {self.host}: /v2/ returned {r.status_code}")

    def blob_exists(self, repo: str, digest: str) -> bool:
        r = self._request("HEAD", f"/v2/{repo}/blobs/{digest}", repo, push=False,
                          expect=(200, 404))
        return r.status_code == 200

    def mount_blob(self, repo: str, digest: str, from_repo: str) -> bool:
        """Cross-repository mount; True when the registry mounted it (201). A bearer token
        for it covers pulling from `from_repo` too (else a registry answers 202, no mount)."""
        url = self._with_query(f"/v2/{repo}/blobs/uploads/", mount=digest, **{"from": from_repo})
        r = self._request("POST", url, repo, expect=(201, 202), pull_also=from_repo)
        if r.status_code == 202:  # not mounted: cancel the session we were given
            try:
                self._session.delete(self._location(r), timeout=_TIMEOUT)
            except requests.RequestException:
                pass
        return r.status_code == 201

    def upload_blob(self, repo: str, src: BlobSource) -> None:
        """Upload one blob, monolithic or chunked depending on its size."""
        r = self._request("POST", f"/v2/{repo}/blobs/uploads/", repo, expect=(202,))
        location = self._location(r)
        octet = {"Content-Type": "application/octet-stream"}
        if src.size <= self.chunk_threshold:
            if src.data is not None:
                self._request("PUT", self._with_query(location, digest=src.digest), repo,
                              expect=(201,), body=src.data,
                              headers={**octet, "Content-Length": str(src.size)})
            else:
                with src.open_file() as f:
                    def rewind(f: Any = f) -> Any:
                        f.seek(0)
                        return f

                    self._request("PUT", self._with_query(location, digest=src.digest), repo,
                                  expect=(201,), body=f, rewind=rewind,
                                  headers={**octet, "Content-Length": str(src.size)})
            return
        offset = 0
        for chunk in _chunks(src, self.chunk_size):
            end = offset + len(chunk) - 1
            r = self._request("PATCH", location, repo, expect=(202,), body=chunk, headers={
                **octet, "Content-Range": f"{offset}-{end}", "Content-Length": str(len(chunk)),
            })
            location = self._location(r)
            offset += len(chunk)
        if offset != src.size:
            raise RegistryError(f"blob {src.digest}: read {offset} bytes, expected {src.size}")
        self._request("PUT", self._with_query(location, digest=src.digest), repo, expect=(201,),
                      body=b"", headers={"Content-Length": "0"})

    def put_manifest(self, repo: str, ref: str, data: bytes, media_type: str) -> str:
        """PUT exact manifest/index bytes under a tag or digest; returns their digest."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        r = self._request("PUT", f"/v2/{repo}/manifests/{ref}", repo, expect=(201,), body=data,
                          headers={"Content-Type": media_type})
        got = r.headers.get("Docker-Content-Digest")
        if got and got != digest:
            raise RegistryError(
                f"registry {self.host}: stored {repo}:{ref} as {got}, but we sent {digest}"
            )
        return digest

    def get_manifest(self, repo: str, ref: str) -> tuple[bytes, str]:
        r = self._request("GET", f"/v2/{repo}/manifests/{ref}", repo, push=False, headers={
            "Accept": f"{MEDIA_INDEX}, {MEDIA_MANIFEST}, "
                      "application/vnd.docker.distribution.manifest.v2+json, "
                      "application/vnd.docker.distribution.manifest.list.v2+json",
        })
        return r.content, r.headers.get("Content-Type", "")

    def manifest_digest(self, repo: str, ref: str) -> str | None:
        """The digest the registry holds under `ref` (a tag or digest; HEAD, its
        `Docker-Content-Digest`), or None when it has no such manifest."""
        r = self._request("HEAD", f"/v2/{repo}/manifests/{ref}", repo, push=False,
                          expect=(200, 404),
                          headers={"Accept": f"{MEDIA_INDEX}, {MEDIA_MANIFEST}"})
        if r.status_code == 404:
            return None
        return r.headers.get("Docker-Content-Digest") or ""

    def find_manifest(self, repo: str, ref: str, accept: str) -> bytes | None:
        """The manifest `ref` of media type `accept`, or None when the registry has none."""
        r = self._request("GET", f"/v2/{repo}/manifests/{ref}", repo, push=False,
                          expect=(200, 404), headers={"Accept": accept})
        return r.content if r.status_code == 200 else None

    def get_blob(self, repo: str, digest: str) -> requests.Response | None:
        """The blob's answer with its body unread (the caller closes it: `with`), or None
        when the registry has no such blob. Not verified: the caller hashes what it reads."""
        r = self._request("GET", f"/v2/{repo}/blobs/{digest}", repo, push=False,
                          expect=(200, 404), stream=True)
        if r.status_code == 404:
            r.close()
            return None
        return r

    def tags(self, repo: str) -> list[str]:
        r = self._request("GET", f"/v2/{repo}/tags/list", repo, push=False)
        return list(r.json().get("tags") or [])


def _chunks(src: BlobSource, size: int) -> Iterator[bytes]:
    if src.data is not None:
        for i in range(0, len(src.data), size):
            yield src.data[i : i + size]
        return
    with src.open_file() as f:
        while chunk := f.read(size):
            yield chunk


def push_image(
    registry: Registry,
    repo: str,
    tags: list[str],
    index: Blob | None,
    images: list[BuiltImage],
    layers: list[BlobSource],
    *,
    workers: int = 4,
    mount_from: str | Callable[[str], str] = "",
    head_manifests: bool = False,
) -> PushResult:
    """Push layers + configs (concurrently, skipping existing blobs), each manifest by digest,
    then the index under every tag (or by digest when `tags` is empty).

    A blob the repository lacks is mounted from `mount_from` (a repository of this registry,
    or a function naming one per digest, "" for none) when the registry mounts it, else
    uploaded. With `head_manifests`, a manifest the registry has under its digest, and a tag
    already naming the index, are HEADed and not put again."""
    blobs: dict[str, BlobSource] = {}
    for src in layers:
        blobs.setdefault(src.digest, src)
    for img in images:
        blobs.setdefault(img.config.digest, BlobSource.from_blob(img.config))
    result = PushResult(index_digest="", manifest_digests={})
    lock = threading.Lock()

    def one(src: BlobSource) -> None:
        if registry.blob_exists(repo, src.digest):
            kind = result.skipped
        else:
            source = mount_from(src.digest) if callable(mount_from) else mount_from
            if source and source != repo and registry.mount_blob(repo, src.digest, source):
                kind = result.mounted
            else:
                registry.upload_blob(repo, src)
                kind = result.uploaded
        with lock:
            kind.append(src.digest)

    # Largest first so the long uploads start early.
    ordered = sorted(blobs.values(), key=lambda b: -b.size)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for fut in [pool.submit(one, b) for b in ordered]:
            fut.result()
    for img in images:
        digest = img.manifest.digest
        if head_manifests and registry.manifest_digest(repo, digest) is not None:
            result.manifest_digests[img.arch] = digest
            result.manifests_skipped.append(digest)
            continue
        result.manifest_digests[img.arch] = registry.put_manifest(
            repo, digest, img.manifest.data, img.manifest.media_type
        )
    top = index if index is not None else (images[0].manifest if len(images) == 1 else None)
    if top is None:
        raise RegistryError("push: several images but no index to tie them together")
    refs = tags or [top.digest]
    for ref in refs:
        if head_manifests and registry.manifest_digest(repo, ref) == top.digest:
            result.index_digest = top.digest
            result.manifests_skipped.append(ref)
            continue
        result.index_digest = registry.put_manifest(repo, ref, top.data, top.media_type)
    return result
