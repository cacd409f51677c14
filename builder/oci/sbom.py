"""SPDX 2.3 JSON documents for an image (per arch) and for its index, shaped like apko's.

Per-arch document packages, in order: the image (manifest digest, purl `pkg:oci/...`), one
package per layer, the operating system (from `/etc/os-release`: ID, NAME, VERSION_ID;
`unknown` when absent), then every installed APK: the packages its own SBOM
(`/var/lib/db/sbom/<name>-<version>.spdx.json`, shipped by melange-built packages) describes,
minus that document's operating-system entry, with its non-file relationships; or, when the
package ships no SBOM, one generated entry with purl `pkg:apk/<os>/<name>@<version>?arch=`.
Every APK package is `CONTAINS`-related to the image. Entries are de-duplicated by SPDX ID
(dict lookups, so the work is linear in the number of packages).

Output is Go's `json.Encoder` with two-space indent, HTML escaping included, so the bytes
are deterministic for the same inputs (`created` is the build date).
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from builder.archs import platform_of
from builder.errors import FormatError
from builder.gojson import Struct, dumps_encoder
from builder.oci.image import MEDIA_INDEX, MEDIA_LAYER_GZIP, MEDIA_MANIFEST, rfc3339

NAMESPACE = "https://spdx.org/spdxdocs/apko/"
LICENSE_LIST_VERSION = "3.27"
INDEX_SUPPLIER = "Organization: Chainguard, Inc."
NOASSERTION = "NOASSERTION"

# Field order of an SPDX package as apko serialises it.
_PACKAGE_FIELDS = (
    "SPDXID", "name", "versionInfo", "filesAnalyzed", "licenseConcluded", "licenseDeclared",
    "description", "downloadLocation", "originator", "supplier", "sourceInfo", "copyrightText",
    "primaryPackagePurpose", "checksums", "externalRefs",
)
_RELATIONSHIP_FIELDS = ("spdxElementId", "relationshipType", "relatedSpdxElement")


@dataclass(frozen=True)
class OSRelease:
    id: str = "unknown"
    name: str = "unknown"
    version_id: str = "unknown"


def parse_os_release(text: str | None) -> OSRelease:
    """ID, NAME and VERSION_ID of an os-release file (`unknown` for missing values)."""
    if not text:
        return OSRelease()
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        try:
            parts = shlex.split(raw)
        except ValueError:
            parts = [raw.strip("\"'")]
        values[key.strip()] = parts[0] if parts else ""
    return OSRelease(
        values.get("ID") or "unknown",
        values.get("NAME") or "unknown",
        values.get("VERSION_ID") or "unknown",
    )


@dataclass(frozen=True)
class SbomPackage:
    """An installed APK; `spdx_json` is its own SBOM from /var/lib/db/sbom, if it ships one."""

    name: str
    version: str
    arch: str
    license: str = ""
    spdx_json: bytes | None = None
    source: str = ""  # for error messages (path of the embedded SBOM)


def spdx_id(text: str) -> str:
    """SPDX IDs may only hold letters, digits, `.` and `-`."""
    return re.sub(r"[^A-Za-z0-9.-]", "-", text)


def _purl(kind: str, name: str, version: str, qualifiers: dict[str, str],
          namespace: str = "") -> str:
    q = "&".join(f"{k}={quote(v, safe='')}" for k, v in sorted(qualifiers.items()) if v)
    ns = f"{quote(namespace, safe='')}/" if namespace else ""
    return f"pkg:{kind}/{ns}{quote(name, safe='')}@{quote(version, safe=':')}" + (
        f"?{q}" if q else ""
    )


def _purl_ref(locator: str) -> Struct:
    return Struct([("referenceCategory", "PACKAGE-MANAGER"), ("referenceLocator", locator),
                   ("referenceType", "purl")])


def _package(fields: dict[str, Any]) -> Struct:
    ordered = [(k, fields[k]) for k in _PACKAGE_FIELDS if k in fields]
    ordered += [(k, v) for k, v in fields.items() if k not in _PACKAGE_FIELDS]
    return Struct(ordered)


def _relationship(a: str, kind: str, b: str) -> Struct:
    return Struct([("spdxElementId", a), ("relationshipType", kind), ("relatedSpdxElement", b)])


def _oci_repo(repo: str) -> tuple[str, dict[str, str]]:
    """purl name + repository_url qualifier for an image repository like `reg:5000/a/b`."""
    repo = repo.split("@", 1)[0]
    last = repo.rsplit("/", 1)[-1]
    if ":" in last:
        repo = repo[: len(repo) - len(last)] + last.split(":", 1)[0]
    name = repo.rsplit("/", 1)[-1]
    first = repo.split("/", 1)[0]
    if "/" in repo and ("." in first or ":" in first or first == "localhost"):
        return name, {"repository_url": repo}
    return name, {}


def _document(name: str, created: int, describes: str, packages: list[Struct],
              relationships: list[Struct], tool_version: str) -> bytes:
    doc = Struct([
        ("SPDXID", "SPDXRef-DOCUMENT"),
        ("name", name),
        ("spdxVersion", "SPDX-2.3"),
        ("creationInfo", Struct([
            ("created", rfc3339(created)),
            ("creators", [f"Tool: apko ({tool_version})", "Organization: Chainguard, Inc"]),
            ("licenseListVersion", LICENSE_LIST_VERSION),
        ])),
        ("dataLicense", "CC0-1.0"),
        ("documentNamespace", NAMESPACE),
        ("documentDescribes", [describes]),
        ("packages", packages),
        ("relationships", relationships),
    ])
    return dumps_encoder(doc, indent="  ")


def _apk_entries(
    pkg: SbomPackage, os_rel: OSRelease
) -> tuple[list[dict[str, Any]], list[dict[str, str]], list[str]]:
    """(packages, relationships, described IDs) contributed by one installed APK."""
    if pkg.spdx_json is None:
        pid = spdx_id(f"SPDXRef-Package-apk-{pkg.name}-{pkg.version}")
        entry = {
            "SPDXID": pid,
            "name": pkg.name,
            "versionInfo": pkg.version,
            "filesAnalyzed": False,
            "licenseConcluded": NOASSERTION,
            "licenseDeclared": pkg.license or NOASSERTION,
            "downloadLocation": NOASSERTION,
            "supplier": f"Organization: {os_rel.name}",
            "copyrightText": NOASSERTION,
            "primaryPackagePurpose": "APPLICATION",
            "externalRefs": [_purl_ref(_purl("apk", pkg.name, pkg.version, {"arch": pkg.arch},
                                             namespace=os_rel.id))],
        }
        return [entry], [], [pid]
    try:
        doc = json.loads(pkg.spdx_json)
    except ValueError as e:
        where = pkg.source or f"{pkg.name}-{pkg.version}"
        raise FormatError(f"{where}: package SBOM is not valid JSON: {e}") from None
    dropped = {
        p.get("SPDXID") for p in doc.get("packages", [])
        if str(p.get("SPDXID", "")).startswith("SPDXRef-OperatingSystem")
        or p.get("primaryPackagePurpose") in ("OPERATING-SYSTEM", "OPERATING_SYSTEM")
    }
    packages = [p for p in doc.get("packages", []) if p.get("SPDXID") not in dropped]
    known = {p.get("SPDXID") for p in packages}
    rels = [
        r for r in doc.get("relationships", [])
        if r.get("spdxElementId") in known and r.get("relatedSpdxElement") in known
    ]
    describes = [d for d in doc.get("documentDescribes", []) if d in known]
    return packages, rels, describes


def image_sbom(
    *,
    repo: str,
    arch: str,
    manifest_digest: str,
    layer_digests: list[str],
    created: int,
    os_release: OSRelease,
    packages: list[SbomPackage],
    tool_version: str = "devel",
    layer_media_types: list[str] | None = None,
) -> bytes:
    """The per-arch SPDX document (apko's `sbom-<apkarch>.spdx.json`). `layer_media_types`
    (default: gzip for every layer) go into the layers' purls."""
    if not layer_digests:
        raise FormatError(f"sbom {arch}: image has no layers")
    oci_arch_name, variant = platform_of(arch)
    purl_name, repo_q = _oci_repo(repo)
    plat_q = {"arch": oci_arch_name, "os": "linux", "variant": variant, **repo_q}
    supplier = f"Organization: {os_release.name}"
    img_hex = manifest_digest.split(":", 1)[1]
    image_id = f"SPDXRef-Package-Image-sha256-{img_hex}"
    out_pkgs: list[Struct] = [_package({
        "SPDXID": image_id,
        "name": manifest_digest,
        "versionInfo": manifest_digest,
        "filesAnalyzed": False,
        "description": "apko container image",
        "downloadLocation": NOASSERTION,
        "supplier": supplier,
        "primaryPackagePurpose": "CONTAINER",
        "checksums": [Struct([("algorithm", "SHA256"), ("checksumValue", img_hex)])],
        "externalRefs": [_purl_ref(_purl("oci", purl_name, manifest_digest,
                                         {**plat_q, "mediaType": MEDIA_MANIFEST}))],
    })]
    rels: list[Struct] = []
    media_types = layer_media_types or [MEDIA_LAYER_GZIP] * len(layer_digests)
    for layer, media_type in zip(layer_digests, media_types, strict=True):
        layer_id = f"SPDXRef-Package-ImageLayer-sha256-{layer.split(':', 1)[1]}"
        out_pkgs.append(_package({
            "SPDXID": layer_id,
            "name": layer,
            "versionInfo": os_release.version_id,
            "filesAnalyzed": False,
            "description": "apko operating system layer",
            "downloadLocation": NOASSERTION,
            "supplier": supplier,
            "primaryPackagePurpose": "CONTAINER",
            "externalRefs": [_purl_ref(_purl("oci", purl_name, layer,
                                             {**plat_q, "mediaType": media_type}))],
        }))
        rels.append(_relationship(image_id, "CONTAINS", layer_id))
    out_pkgs.append(_package({
        "SPDXID": spdx_id(f"SPDXRef-OperatingSystem-{os_release.id}"),
        "name": os_release.id,
        "versionInfo": os_release.version_id,
        "filesAnalyzed": False,
        "description": "Operating System",
        "downloadLocation": NOASSERTION,
        "supplier": supplier,
        "primaryPackagePurpose": "OPERATING_SYSTEM",
    }))
    seen_pkgs = {p.get("SPDXID") for p in out_pkgs}
    seen_rels: set[tuple[str, str, str]] = set()
    for pkg in packages:
        p_list, r_list, described = _apk_entries(pkg, os_release)
        for p in p_list:
            if p.get("SPDXID") not in seen_pkgs:
                seen_pkgs.add(p.get("SPDXID"))
                out_pkgs.append(_package(p))
        for r in [*r_list, *({"spdxElementId": image_id, "relationshipType": "CONTAINS",
                              "relatedSpdxElement": d} for d in described)]:
            key = (r["spdxElementId"], r["relationshipType"], r["relatedSpdxElement"])
            if key not in seen_rels:
                seen_rels.add(key)
                rels.append(Struct([(k, r[k]) for k in _RELATIONSHIP_FIELDS]))
    return _document(f"sbom-{layer_digests[0]}", created, image_id, out_pkgs, rels, tool_version)


def index_sbom(
    *,
    repo: str,
    index_digest: str,
    images: list[tuple[str, str]],
    created: int,
    tool_version: str = "devel",
) -> bytes:
    """The index SPDX document: the index package, each arch's image `VARIANT_OF` it.
    `images` holds (arch, manifest digest) pairs."""
    purl_name, repo_q = _oci_repo(repo)
    idx_hex = index_digest.split(":", 1)[1]
    index_id = f"SPDXRef-Package-sha256-{idx_hex}"
    pkgs = [_package({
        "SPDXID": index_id,
        "name": index_digest,
        "versionInfo": index_digest,
        "filesAnalyzed": False,
        "description": "Multi-arch image index",
        "downloadLocation": NOASSERTION,
        "supplier": INDEX_SUPPLIER,
        "sourceInfo": "Generated at image build time by apko",
        "primaryPackagePurpose": "CONTAINER",
        "checksums": [Struct([("algorithm", "SHA256"), ("checksumValue", idx_hex)])],
        "externalRefs": [_purl_ref(_purl("oci", purl_name, index_digest,
                                         {"mediaType": MEDIA_INDEX, **repo_q}))],
    })]
    rels = []
    for arch, digest in images:
        a, variant = platform_of(arch)
        hexpart = digest.split(":", 1)[1]
        pid = f"SPDXRef-Package-sha256-{hexpart}"
        q = {"arch": a, "os": "linux", "variant": variant, "mediaType": MEDIA_MANIFEST, **repo_q}
        pkgs.append(_package({
            "SPDXID": pid,
            "name": digest,
            "versionInfo": digest,
            "filesAnalyzed": False,
            "downloadLocation": NOASSERTION,
            "supplier": INDEX_SUPPLIER,
            "primaryPackagePurpose": "CONTAINER",
            "checksums": [Struct([("algorithm", "SHA256"), ("checksumValue", hexpart)])],
            "externalRefs": [_purl_ref(_purl("oci", purl_name, digest, q))],
        }))
        rels.append(_relationship(index_id, "VARIANT_OF", pid))
    return _document(f"sbom-{index_digest}", created, index_id, pkgs, rels, tool_version)
