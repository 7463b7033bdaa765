"""Cold `clipdex search`: the exported (ONNX) text tower against the torch path, whole processes.

    .venv/bin/python benchmarks/cold_search.py [--rounds 5] [--photos 200]

A library of generated photos (benchmarks/photos.py) gets ViT-B-32-256 vectors, with
random weights written here as a checkpoint (no hub). The vectors are random unit
vectors imported with `Library.import_embeddings` rather than indexed: encoding 200
photos with ViT-B-32-256 takes minutes on a busy 2-core machine, and what a search
costs does not depend on how the vectors got there. The preparation runs in its own
process, so this one stays small (a child's peak RSS is its own VmHWM, read at exit).

Each round runs `clipdex search QUERY --top 5` cold (a fresh interpreter running the
CLI's `main`) on each path, interleaved:
- torch: `CLIPDEX_NO_EXPORT=1` (exports neither used nor built): torch + open_clip load the model.
- onnx: the library's exported text tower (ONNX Runtime, no torch, no open_clip).
Then, reported apart, one cold search that must first export: the export removed first.
Prints median wall time and peak RSS, the ratios, and the CPU.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = "ViT-B-32-256"
QUERY = "kids playing on the beach at sunset"

_PREPARE = """
import sys
from pathlib import Path
import numpy as np, open_clip, torch
from safetensors.torch import save_file
sys.path.insert(0, sys.argv[4])
from benchmarks.photos import generate
from indexer.models import ModelSpec
from retrieval.library import Library
home, scratch, n = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
model = open_clip.create_model("%s", pretrained=None)
checkpoint = scratch / "random.safetensors"
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(checkpoint))
paths = generate(scratch / "photos", phones=n, screenshots=0, web=0)
vectors = np.random.default_rng(0).standard_normal((len(paths), 512)).astype(np.float32)
with Library.open(home) as lib:
    lib.import_embeddings([str(p) for p in paths], vectors, model=ModelSpec.parse("%s", checkpoint))
print(len(paths))
""" % (MODEL, MODEL)

_SEARCH = """
import sys
from cli.app import main
sys.argv = ["clipdex", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
hwm = [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
print(f"PEAK_KB={hwm} TORCH={'torch' in sys.modules}", file=sys.stderr)
"""


def env(home: Path, **extra: str) -> dict[str, str]:
    return {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "CLIPDEX_HOME": str(home), **extra}


def search(home: Path, **extra: str) -> tuple[float, float, bool, str]:
    """(wall s, peak RSS MB, torch imported, stdout) of one cold search process."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _SEARCH, "search", QUERY, "--top", "5"], capture_output=True,
                          text=True, cwd=ROOT, env=env(home, **extra), check=True)
    wall = time.perf_counter() - t0
    last = done.stderr.strip().splitlines()[-1]
    peak_kb = int(last.split()[0].removeprefix("PEAK_KB="))
    return wall, peak_kb / 1024, last.endswith("TORCH=True"), done.stdout


def cpu() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "?")
    flags = next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), [])
    shown = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{name}, {os.cpu_count()} CPUs, flags: {' '.join(shown) or 'none of avx2/avx512'}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--photos", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home, scratch = Path(tmp) / "lib", Path(tmp)
        subprocess.run([sys.executable, "-c", _PREPARE, str(home), str(scratch), str(args.photos), str(ROOT)],
                       cwd=ROOT, env=env(home), check=True, capture_output=True)
        derived = home / "derived"
        first = search(home)  # the torch path, which exports the text tower
        rows: dict[str, list[tuple[float, float, bool, str]]] = {"torch": [], "onnx": []}
        for _ in range(args.rounds):
            rows["torch"].append(search(home, CLIPDEX_NO_EXPORT="1"))
            rows["onnx"].append(search(home))
        for entry in derived.iterdir():
            if entry.is_dir():
                shutil.rmtree(entry)
        again = search(home)
    assert not any(r[2] for r in rows["onnx"]), "the exported path imported torch"
    med = {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v)) for k, v in rows.items()}
    print(f"cold `clipdex search {QUERY!r} --top 5`, {MODEL}, {args.photos} photos, {args.rounds} interleaved rounds, medians")
    print(f"CPU: {cpu()}")
    print(f"{'path':<34}{'wall s':>8}{'peak RSS MB':>13}{'wall vs torch':>15}{'RSS vs torch':>14}")
    tw, tm = med["torch"]
    table = [("torch (CLIPDEX_NO_EXPORT=1)", *med["torch"]), ("onnx (exported text tower)", *med["onnx"]),
             ("first search, exports (1 run)", first[0], first[1]), ("after removing the export (1 run)", again[0], again[1])]
    for name, wall, mb in table:
        print(f"{name:<34}{wall:>8.2f}{mb:>13.0f}{wall / tw:>14.2f}x{mb / tm:>13.2f}x")
    print(f"targets: onnx wall <= 1/6 ({1 / 6:.2f}x), peak RSS <= 1/4 (0.25x) of the torch path")
    print(f"reproduce: python benchmarks/cold_search.py --rounds {args.rounds} --photos {args.photos}")


if __name__ == "__main__":
    main()
