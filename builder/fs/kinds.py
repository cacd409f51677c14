"""Kinds of image filesystem node, and the tar typeflags that carry them (the one table)."""

from __future__ import annotations

DIR, FILE, SYMLINK, HARDLINK, CHAR, BLOCK, FIFO = (
    "dir", "file", "symlink", "hardlink", "char", "block", "fifo")

# Tar typeflag -> kind, for the entries a package data tar may hold ("7", contiguous, is a
# regular file to every unpacker).
KIND_OF_TYPEFLAG: dict[str, str] = {"0": FILE, "7": FILE, "1": HARDLINK, "2": SYMLINK,
                                    "3": CHAR, "4": BLOCK, "5": DIR, "6": FIFO}
# Kind -> the typeflag a layer writes for it (Go archive/tar's).
TYPEFLAG_OF_KIND: dict[str, str] = {DIR: "5", FILE: "0", SYMLINK: "2", HARDLINK: "1",
                                    CHAR: "3", BLOCK: "4", FIFO: "6"}
