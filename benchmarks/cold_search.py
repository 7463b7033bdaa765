"""Cold `clipdex search`: the exported (ONNX) towers and a running server against the torch path, whole processes.

    .venv/bin/python benchmarks/cold_search.py [--rounds 5] [--photos 200]

A library of generated photos (benchmarks/photos.py) gets ViT-B-32-256 vectors, with
random weights written here as a checkpoint (no hub). The vectors are random unit
vectors imported with `Library.import_embeddings` rather than indexed: encoding 200
photos with ViT-B-32-256 takes minutes on a busy 2-core machine, and what a search
costs does not depend on how the vectors got there. The preparation runs in its own
process, so this one stays small (a child's peak RSS is its own VmHWM, read at exit).

Each round runs `clipdex search QUERY --top 5` cold (a fresh interpreter running the
CLI's `main`) on each path, interleaved, while `clipdex serve` runs over the library:
- torch: `--local` with `CLIPDEX_NO_EXPORT=1` (exports neither used nor built): torch + open_clip load the model.
- onnx int8: `--local` (precision auto), the library's int8 text tower (ONNX Runtime, no
  torch, no open_clip), which the first search quantised from the fp32 export and accepted
  by the fidelity guard's thresholds.
- onnx fp32: `--local --precision fp32`, the fp32 text export (equal to torch fp32).
- server: the query sent to the running `clipdex serve` (LIBRARY/server.json); the
  process must import neither numpy, SQLAlchemy nor FAISS, else the row fails.
Every path must print the same results (the negative control: a search that fell
back, or ranked differently, stops the benchmark), except that the int8 paths (onnx int8, and the
server, which uses the same text tower) must only agree on the top result (its query vector is ~0.999 cosine from fp32's: near ties among
random vectors may swap; its top-5 overlap is printed). Each onnx row must have opened
the text tower it names (its ONNX Runtime sessions are recorded), else the benchmark stops. Then, reported apart, the cold
searches that must first export: the library's first search, and one after the
export was removed. Prints median wall time and peak RSS, the ratios, and the CPU.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

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
import os, sys
if os.environ.get("BENCH_RECORD_SESSIONS"):  # which ONNX files the search opened (onnxruntime is imported there anyway)
    import onnxruntime
    class _Recorded(onnxruntime.InferenceSession):
        def __init__(self, path, *args, **kwargs):
            print("SESSION=" + str(path), file=sys.stderr)
            super().__init__(path, *args, **kwargs)
    onnxruntime.InferenceSession = _Recorded
from cli.app import main
from cpu_info import cpu  # noqa: E402
sys.argv = ["clipdex", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
hwm = [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
heavy = ",".join(m for m in ("numpy", "sqlalchemy", "faiss", "torch") if m in sys.modules)
print(f"PEAK_KB={hwm} HEAVY={heavy}", file=sys.stderr)
"""


def env(home: Path, **extra: str) -> dict[str, str]:
    return {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "CLIPDEX_HOME": str(home), **extra}


Run = tuple[float, float, str, str, list[str]]


def search(home: Path, *flags: str, **extra: str) -> Run:
    """(wall s, peak RSS MB, heavy modules imported, stdout, ONNX files opened) of one cold search process."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _SEARCH, "search", QUERY, "--top", "5", *flags], capture_output=True,
                          text=True, cwd=ROOT, env=env(home, **extra), check=True)
    wall = time.perf_counter() - t0
    last = done.stderr.strip().splitlines()[-1]
    peak, heavy = last.split()
    opened = [Path(ln.removeprefix("SESSION=")).name for ln in done.stderr.splitlines() if ln.startswith("SESSION=")]
    return wall, int(peak.removeprefix("PEAK_KB=")) / 1024, heavy.removeprefix("HEAVY="), done.stdout, opened


@contextmanager
def serving(home: Path) -> Iterator[int]:
    """`clipdex serve` over the library until the block ends; yields its pid once it has recorded itself."""
    from retrieval.server_record import read_record

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = "import sys\nfrom cli.app import main\nsys.argv = ['clipdex', *sys.argv[1:]]\nmain()\n"
    proc = subprocess.Popen([sys.executable, "-c", code, "serve", "--port", str(port)], cwd=ROOT, env=env(home),
                            stderr=subprocess.DEVNULL)
    try:
        while read_record(home) is None:
            if proc.poll() is not None:
                raise SystemExit("clipdex serve stopped before it served")
            time.sleep(0.2)
        yield proc.pid
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)


def rss_mb(pid: int) -> float:
    return int([ln.split()[1] for ln in open(f"/proc/{pid}/status") if ln.startswith("VmRSS:")][0]) / 1024




def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--photos", type=int, default=200)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as tmp:
        home, scratch = Path(tmp) / "lib", Path(tmp)
        subprocess.run([sys.executable, "-c", _PREPARE, str(home), str(scratch), str(args.photos), str(ROOT)],
                       cwd=ROOT, env=env(home), check=True, capture_output=True)
        derived = home / "derived"
        first = search(home)  # the torch path, which exports the text tower and quantises it
        int8_check = int8_validation(derived)
        rows: dict[str, list[Run]] = {"torch": [], "onnx_int8": [], "onnx_fp32": [], "server": []}
        with serving(home) as server_pid:
            for _ in range(args.rounds):
                rows["torch"].append(search(home, "--local", CLIPDEX_NO_EXPORT="1"))
                rows["onnx_int8"].append(search(home, "--local", BENCH_RECORD_SESSIONS="1"))
                rows["onnx_fp32"].append(search(home, "--local", "--precision", "fp32", BENCH_RECORD_SESSIONS="1"))
                rows["server"].append(search(home))
            server_mb = rss_mb(server_pid)
        for entry in derived.iterdir():
            if entry.is_dir():
                shutil.rmtree(entry)
        again = search(home)
    check(rows, first)
    med = {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v)) for k, v in rows.items()}
    print(f"cold `clipdex search {QUERY!r} --top 5`, {MODEL}, {args.photos} photos, {args.rounds} interleaved rounds, medians")
    print(f"CPU: {cpu()}")
    print(f"{'path':<38}{'wall s':>8}{'peak RSS MB':>13}{'wall vs torch':>15}{'RSS vs torch':>14}")
    tw, tm = med["torch"]
    table = [("torch (--local, CLIPDEX_NO_EXPORT=1)", *med["torch"]),
             ("onnx int8 (--local, auto: int8 text)", *med["onnx_int8"]),
             ("onnx fp32 (--local --precision fp32)", *med["onnx_fp32"]),
             ("server (clipdex serve running)", *med["server"])]
    for name, wall, mb in table:
        print(f"{name:<38}{wall:>8.2f}{mb:>13.0f}{wall / tw:>14.3f}x{mb / tm:>13.3f}x")
    print(f"text towers opened: onnx int8 row {sorted(set(rows['onnx_int8'][0][4]))}, "
          f"onnx fp32 row {sorted(set(rows['onnx_fp32'][0][4]))}; "
          f"int8 top-5 overlap with torch: {overlap(rows['onnx_int8'], first)}/5 (min over rounds)")
    print(f"int8 text tower's check at creation against the fp32 export: {int8_check}")
    print("must first export (1 run each, apart; the torch path, then the export and its int8 copy):")
    for name, wall, mb in [("first search of the library", first[0], first[1]), ("after removing the export", again[0], again[1])]:
        print(f"{name:<38}{wall:>8.2f}{mb:>13.0f}{wall / tw:>14.2f}x{mb / tm:>13.2f}x")
    print(f"the server process itself: {server_mb:.0f} MB resident (not counted above)")
    print(f"targets (the default path, onnx int8): onnx wall <= 1/6 ({1 / 6:.3f}x) and peak RSS <= 1/4 (0.250x) of the torch path; server wall <= 1/25 (0.040x)")
    print(f"reproduce: python benchmarks/cold_search.py --rounds {args.rounds} --photos {args.photos}")


def int8_validation(derived: Path) -> str:
    """The int8 text tower's validation figures from its tag (or its refusal)."""
    import json

    for tag in derived.glob("*/text-encoder-int8.tag.json"):
        data = json.loads(tag.read_text())
        if data.get("refused"):
            return f"refused ({data['refused']})"
        v = data["validation"]
        return f"cosine mean {v['mean_cosine']:.4f} / min {v['min_cosine']:.4f} over {v['samples']:.0f} caption encodings"
    return "none made"


def paths_of(run: Run) -> list[str]:
    return [line.split()[1] for line in run[3].splitlines()]


def overlap(runs: list[Run], first: Run) -> int:
    return min(len(set(paths_of(r)) & set(paths_of(first))) for r in runs)


def check(rows: dict[str, list[Run]], first: Run) -> None:
    """Stop unless each path ran as labelled and all printed the torch path's results (int8: its top result)."""
    if any("torch" in r[2] for r in rows["onnx_int8"] + rows["onnx_fp32"]):
        raise SystemExit("the exported path imported torch")
    for name, tower in (("onnx_int8", "text-encoder-int8.onnx"), ("onnx_fp32", "text-encoder.onnx")):
        if any(r[4] != [tower] for r in rows[name]):
            raise SystemExit(f"the {name} path opened {rows[name][0][4]}, not {tower} alone")
    if any(r[2] for r in rows["server"]):
        raise SystemExit(f"a delegated search imported {rows['server'][0][2]}: it fell back to the local path")
    if any("torch" not in r[2] for r in rows["torch"]):
        raise SystemExit("the torch path did not import torch")
    want = paths_of(first)  # paths; scores differ in the 4th decimal at most
    for name, runs in rows.items():
        for r in runs:
            got = paths_of(r)
            if (got[:1] != want[:1]) if name in ("onnx_int8", "server") else (got != want):
                raise SystemExit(f"the {name} path ranked differently:\n{r[3]}\nnot\n{first[3]}")


if __name__ == "__main__":
    main()
