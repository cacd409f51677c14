"""Machine fingerprint stored with every run record. Results from different machines are
never compared with each other: they live under `.perf/results/<machine-id>/`."""

from __future__ import annotations

import hashlib
import os
import platform
import re
import socket
import ssl
import sys
import zlib
from functools import lru_cache
from importlib import metadata


def _cpu_model() -> str:
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return platform.processor() or platform.machine()
    m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    return m.group(1).strip() if m else platform.machine()


def _mem_total_mb() -> int:
    try:
        text = open("/proc/meminfo").read()
    except OSError:
        return 0
    m = re.search(r"^MemTotal:\s*(\d+) kB", text, re.M)
    return int(m.group(1)) // 1024 if m else 0


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _governor() -> str | None:
    try:
        return open("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").read().strip()
    except OSError:
        return None


@lru_cache(maxsize=1)
def machine_info() -> dict:
    """CPU model, cores, memory, kernel, Python, compression/crypto library versions and a
    hash of the hostname (the name itself is not stored)."""
    isal_version = _version("isal")
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count() or 1,
        "arch": platform.machine(),
        "memory_mb": _mem_total_mb(),
        "kernel": platform.release(),
        "os": platform.system(),
        "python": platform.python_version(),
        "python_impl": sys.implementation.name,
        "zlib": zlib.ZLIB_RUNTIME_VERSION,
        "isal": isal_version,
        "openssl": ssl.OPENSSL_VERSION,
        "cryptography": _version("cryptography"),
        "governor": _governor(),
        "hostname_hash": hashlib.sha256(socket.gethostname().encode()).hexdigest()[:12],
    }


def machine_id(info: dict | None = None) -> str:
    """Stable, filesystem-safe id: arch, core count and a hash of the hardware identity."""
    info = info or machine_info()
    ident = "|".join(str(info.get(k)) for k in ("cpu_model", "cores", "memory_mb",
                                                  "hostname_hash"))
    digest = hashlib.sha256(ident.encode()).hexdigest()[:10]
    return f"{info.get('arch', 'unknown')}-{info.get('cores', 0)}c-{digest}"


# Fields whose difference makes timings incomparable (a comparison is refused on mismatch).
COMPARABLE_KEYS = ("cpu_model", "cores", "arch", "python", "zlib", "isal", "openssl")


def mismatches(a: dict, b: dict) -> list[str]:
    return [f"{k}: {a.get(k)!r} != {b.get(k)!r}" for k in COMPARABLE_KEYS if a.get(k) != b.get(k)]
