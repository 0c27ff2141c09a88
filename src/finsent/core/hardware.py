"""The CPU this process runs on: its model name and the instruction sets that decide which inference engine is fastest
(int8 dot products, bf16, AMX tiles). One owner for what the engine tuner records and the benchmarks print."""

from __future__ import annotations

import os
import platform
from functools import cache
from pathlib import Path

# The flags that change which engine wins: int8 dot products (VNNI, AMX-INT8), bf16 (AVX512-BF16, AMX-BF16), the
# vector width (AVX2, AVX-512), and on ARM the dot-product, bf16 and int8 matrix extensions.
ENGINE_FLAGS = (
    "avx2",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "asimddp",
    "bf16",
    "i8mm",
    "sve",
)
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")  # any of these: bf16 products run in hardware


@cache
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} where it cannot be read, e.g. on macOS)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_model() -> str:
    """The CPU's model name ("AMD EPYC 9R14", "Intel(R) Xeon(R) Platinum 8488C", ...)."""
    info = _cpuinfo()
    return info.get("model name") or info.get("Model") or platform.processor() or platform.machine() or "unknown CPU"


def cpu_flags() -> list[str]:
    """Which of ENGINE_FLAGS the CPU has (x86 `flags`, ARM `Features`)."""
    info = _cpuinfo()
    have = set((info.get("flags") or info.get("Features") or "").split())
    return [f for f in ENGINE_FLAGS if f in have]


def has_bf16(flags: list[str] | None = None) -> bool:
    return any(f in BF16_FLAGS for f in (cpu_flags() if flags is None else flags))


def usable_cores() -> int:
    """The cores this process may use (its affinity where the OS tells it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_signature() -> dict:
    """What an engine choice depends on: the CPU model, its engine flags and the cores this process may use."""
    return {"model": cpu_model(), "flags": cpu_flags(), "cores": usable_cores()}


def same_cpu(recorded: dict | None, current: dict | None = None) -> bool:
    """Whether an engine tuned on `recorded` still holds here: same model and flags (the core count may differ)."""
    if not recorded:
        return True
    current = current or cpu_signature()
    return recorded.get("model") == current["model"] and sorted(recorded.get("flags") or []) == sorted(current["flags"])
