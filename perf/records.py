"""Run records: one JSON file per measured build, stored as
`.perf/results/<machine-id>/<commit>/<timestamp>-<workload>-<scenario>-<impl>-<n>.json`.

A record holds the process-level measurements (wall, CPU of the process tree, peak RSS), the
per-stage spans the builder wrote, the image it produced and where/what it ran on. Records
from one `apkperf run` share a `job` id and carry a `round`, so base and head runs made next
to each other can be paired.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from builder.errors import FormatError

SCHEMA_VERSION = 1

# field -> accepted types
REQUIRED: dict[str, tuple[type, ...]] = {
    "schema": (int,),
    "workload": (str,),
    "scenario": (str,),
    "impl": (str,),
    "commit": (str,),
    "dirty": (bool,),
    "wall_s": (int, float),
    "cpu_s": (int, float),
    "peak_rss_mb": (int, float),
    "stages": (dict,),
    "image": (dict,),
    "machine": (dict,),
    "machine_id": (str,),
    "started_at": (str,),
    "compressor": (str, type(None)),
    "job": (str,),
    "side": (str,),
    "round": (int,),
}
STAGE_FIELDS: dict[str, tuple[type, ...]] = {
    "wall_s": (int, float), "cpu_s": (int, float), "bytes_in": (int,), "bytes_out": (int,),
    "attrs": (dict,),
}


def validate_record(rec: dict, *, source: str = "<record>") -> dict:
    """Raise FormatError naming the first missing or mistyped field."""
    for key, types in REQUIRED.items():
        if key not in rec:
            raise FormatError(f"{source}: run record lacks field {key!r}")
        if not isinstance(rec[key], types) or (isinstance(rec[key], bool) and bool not in types):
            raise FormatError(f"{source}: run record field {key!r} has type "
                              f"{type(rec[key]).__name__}")
    if rec["schema"] != SCHEMA_VERSION:
        raise FormatError(f"{source}: run record schema {rec['schema']} (want {SCHEMA_VERSION})")
    for name, st in rec["stages"].items():
        for key, types in STAGE_FIELDS.items():
            if not isinstance(st.get(key), types):
                raise FormatError(f"{source}: stage {name!r} field {key!r} missing or mistyped")
    for key in ("digest", "diff_ids"):
        if key not in rec["image"]:
            raise FormatError(f"{source}: run record field 'image' lacks {key!r}")
    return rec


def stages_from_spans(spans_doc: dict, *, source: str = "<spans>") -> dict[str, dict]:
    """Sum the builder's spans per stage name (several archs or repeated spans add up);
    numeric attrs (counters) add up too, other attrs of later spans replace earlier ones."""
    if not isinstance(spans_doc.get("spans"), list):
        raise FormatError(f"{source}: spans file has no 'spans' list")
    stages: dict[str, dict] = {}
    for i, sp in enumerate(spans_doc["spans"]):
        name = sp.get("name")
        if not isinstance(name, str):
            raise FormatError(f"{source}: span #{i} has no name")
        st = stages.setdefault(name, {"wall_s": 0.0, "cpu_s": 0.0, "bytes_in": 0,
                                      "bytes_out": 0, "attrs": {}})
        st["wall_s"] += float(sp.get("wall_s", 0.0))
        st["cpu_s"] += float(sp.get("cpu_s", 0.0))
        st["bytes_in"] += int(sp.get("bytes_in", 0))
        st["bytes_out"] += int(sp.get("bytes_out", 0))
        for key, val in (sp.get("attrs") or {}).items():
            old = st["attrs"].get(key)
            summable = (isinstance(val, int | float) and not isinstance(val, bool)
                        and isinstance(old, int | float) and not isinstance(old, bool))
            st["attrs"][key] = old + val if summable else val
    return stages


def image_from_spans(spans_doc: dict) -> dict:
    """{"digest", "diff_ids", "manifests", "impl"} from the spans file's "image" object."""
    img = spans_doc.get("image") or {}
    manifests = img.get("manifests") or {}
    diff_ids: list[str] = []
    for arch in sorted(manifests):
        diff_ids.extend(manifests[arch].get("diff_ids") or [])
    return {
        "digest": img.get("index_digest"),
        "diff_ids": diff_ids,
        "manifests": manifests,
        "impl": img.get("impl") or {},
    }


def compressor_of(stages: dict[str, dict], image: dict) -> str | None:
    """Which compressor made the layer blob, from the compress span's attrs (falling back to
    the image's per-stage impl map)."""
    attrs = (stages.get("compress") or {}).get("attrs") or {}
    for key in ("compressor", "impl"):
        if attrs.get(key):
            level = attrs.get("level")
            name = str(attrs[key])
            return f"{name}:{level}" if level is not None and ":" not in name else name
    impl = (image.get("impl") or {}).get("compress")
    return str(impl) if impl else None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text)[:80]


def record_path(results_root: Path, rec: dict) -> Path:
    stamp = rec["started_at"].replace(":", "").replace("-", "")
    commit = rec["commit"][:12] + ("-dirty" if rec["dirty"] else "")
    name = (f"{stamp}-{_slug(rec['workload'])}-{_slug(rec['scenario'])}-{_slug(rec['impl'])}"
            f"-{_slug(rec['side'])}-{rec['round']}.json")
    return results_root / rec["machine_id"] / commit / name


def save_record(results_root: Path, rec: dict) -> Path:
    validate_record(rec)
    path = record_path(results_root, rec)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(rec, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def iter_records(results_root: Path, *, machine_id: str | None = None) -> Iterator[dict]:
    """All valid records under the results root (optionally one machine); files that do not
    parse are skipped with their path in the error list of `load_errors`."""
    if not results_root.is_dir():
        return
    machines = [results_root / machine_id] if machine_id else sorted(results_root.iterdir())
    for mdir in machines:
        if not mdir.is_dir():
            continue
        for path in sorted(mdir.glob("*/*.json")):
            try:
                rec = validate_record(json.loads(path.read_text()), source=str(path))
            except (ValueError, FormatError):
                continue
            rec["_path"] = str(path)
            yield rec


def load_records(results_root: Path, **filters: object) -> list[dict]:
    """Records whose fields equal every given filter (e.g. scenario="hot", job="..."). Only
    wall-time records unless `counter` is given: a build counted under valgrind ran ~30x
    slower and its times are not the build's."""
    mid = filters.pop("machine_id", None)
    filters.setdefault("counter", None)
    out = []
    for rec in iter_records(results_root, machine_id=mid if isinstance(mid, str) else None):
        if all(rec.get(k) == v for k, v in filters.items()):
            out.append(rec)
    return out


def layers_from_spans(spans_doc: dict) -> list[dict]:
    """Per layer of a layered image (spans with a `layer` attribute): its layer and compress
    seconds and bytes, summed over archs; [] for a one-layer image."""
    out: dict[int, dict] = {}
    for sp in spans_doc.get("spans") or []:
        index = (sp.get("attrs") or {}).get("layer")
        if sp.get("name") not in ("layer", "compress") or not isinstance(index, int):
            continue
        row = out.setdefault(index, {"layer": index, "layer_s": 0.0, "compress_s": 0.0,
                                     "tar_bytes": 0, "blob_bytes": 0})
        if sp["name"] == "layer":
            row["layer_s"] += float(sp.get("wall_s", 0.0))
            row["tar_bytes"] += int(sp.get("bytes_out", 0))
        else:
            row["compress_s"] += float(sp.get("wall_s", 0.0))
            row["blob_bytes"] += int(sp.get("bytes_out", 0))
    return [out[i] for i in sorted(out)]


def metric(rec: dict, stage: str, field: str = "wall_s") -> float | None:
    """A record's total (`stage == "total"`) or per-stage metric, None when the stage (or the
    field in it: instructions of a build counted as a whole) is absent."""
    if stage == "total":
        return float(rec[field]) if field in rec else None
    st = rec["stages"].get(stage)
    return None if st is None or field not in st else float(st[field])


def group_by(records: Iterable[dict], *keys: str) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = {}
    for rec in records:
        out.setdefault(tuple(rec.get(k) for k in keys), []).append(rec)
    return out
