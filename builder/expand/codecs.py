"""The expand cache's artefacts as bytes and back: control info, tar index and block index
as compact JSON (builder/expand/cached.py says which file holds which)."""

from __future__ import annotations

import base64
import json
from dataclasses import asdict
from dataclasses import fields as dataclass_fields

from builder.apk.tarindex import TarEntry, TarIndex
from builder.deflate.block_index import BlockIndex, BlockStart, EarlyEnd, MemberInfo
from builder.expand.model import ControlEntry

FORMAT = 2  # bump when the artefacts' content or meaning changes (2: TarEntry gained
# mtime_exact and global_header, blocks.json early_ends)


def control_to_json(fields: dict[str, list[str]], control: list[ControlEntry]) -> bytes:
    entries = []
    for c in control:
        d = asdict(c)
        d["data"] = base64.b64encode(c.data).decode()
        entries.append(d)
    doc = {"format": FORMAT, "pkginfo": fields, "control": entries}
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def control_from_json(raw: bytes) -> tuple[dict[str, list[str]], list[ControlEntry]]:
    doc = json.loads(raw)
    control = []
    for d in doc["control"]:
        d = dict(d)
        d["data"] = base64.b64decode(d["data"])
        control.append(ControlEntry(**d))
    return doc["pkginfo"], control


_ENTRY_FIELDS = [f.name for f in dataclass_fields(TarEntry)]


def tar_index_to_json(index: TarIndex) -> bytes:
    """`TarIndex` as compact JSON: one array per entry (field order in "fields"). About twice
    as fast to load as `TarIndex.to_json`'s object-per-entry form, which matters on hot loads
    of packages with tens of thousands of files."""
    rows = [list(vars(e).values()) for e in index.entries]  # __dict__ is in field order
    return json.dumps({"end": index.end_offset, "fields": _ENTRY_FIELDS, "rows": rows},
                      separators=(",", ":")).encode()


def tar_index_from_json(raw: bytes) -> TarIndex:
    doc = json.loads(raw)
    if doc["fields"] != _ENTRY_FIELDS:
        raise ValueError("tar index fields differ from this version's TarEntry")
    return TarIndex(entries=[TarEntry(*row) for row in doc["rows"]], end_offset=doc["end"])



def block_index_to_json(index: BlockIndex) -> bytes:
    doc = {
        "blocks": [[b.bit, b.out, b.crc, b.member, int(b.member_start)] for b in index.blocks],
        "members": [[m.start, m.data_bit, m.end_bit, m.end, m.out_start, m.out_end, m.crc]
                    for m in index.members],
        "early_ends": [[end, e.block_bit, e.bit, e.out, int(e.final), e.eob_bits, e.eob_nbits]
                       for end, e in sorted(index.early_ends.items())],
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def block_index_from_json(raw: bytes) -> BlockIndex:
    doc = json.loads(raw)
    return BlockIndex(
        blocks=[BlockStart(bit, out, crc, member, bool(ms))
                for bit, out, crc, member, ms in doc["blocks"]],
        members=[MemberInfo(*m) for m in doc["members"]],
        early_ends={end: EarlyEnd(block_bit, bit, out, bool(final), eob_bits, eob_nbits)
                    for end, block_bit, bit, out, final, eob_bits, eob_nbits
                    in doc.get("early_ends", [])},
    )
