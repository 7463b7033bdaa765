"""The CPU line every benchmark prints in its header: model, usable CPUs and the flags that decide its speed."""

from __future__ import annotations

import os
import platform
from pathlib import Path

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")


def cpu() -> str:
    """e.g. 'AMD EPYC 9B14, 2 CPUs, flags: avx2 avx512f avx512_vnni avx512_bf16'."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "?")
    flags = next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), [])
    shown = [f for f in FLAGS if f in flags]
    return f"{name}, {len(os.sched_getaffinity(0))} CPUs, flags: {' '.join(shown) or 'none of avx2/avx512'}"
