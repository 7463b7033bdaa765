"""Query latency: warm end-to-end search at 100k items, and a cold `clipdex search` process.

    .venv/bin/python benchmarks/query_latency.py [--items 100000]

The library is filled through the public bulk import (random 512-d vectors for
ViT-B-32-256 with random weights, written here as a checkpoint: no hub). Warm
search = text encode + index search + catalog look-up, through `Library.search`.
The in-run baseline is the straightforward way: encode the query padded to 77
tokens and rank every stored vector with numpy.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from retrieval.library import Library  # noqa: E402
from indexer.models import ModelSpec  # noqa: E402

QUERIES = [f"{a} {b} at {c}" for a in ("kids", "a dog", "two cats", "an old car", "my grandmother")
           for b in ("playing", "sleeping", "running", "laughing") for c in ("the beach", "sunset", "home", "night", "school")]


def pct(xs: list[float], p: float) -> float:
    return float(np.percentile(np.array(xs) * 1000, p))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "clipdex-bench")
    args = ap.parse_args()
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    weights = work / "ViT-B-32-256-random.safetensors"
    if not weights.exists():
        m = open_clip.create_model("ViT-B-32-256", pretrained=None)
        save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(weights))
    spec = ModelSpec.parse("ViT-B-32-256", weights)
    home = work / f"latency-lib-{args.items}"
    if not (home / "filled").exists():
        shutil.rmtree(home, ignore_errors=True)
        print(f"importing {args.items:,} items ...", file=sys.stderr)
        vecs = np.random.default_rng(0).standard_normal((args.items, 512)).astype(np.float32)
        with Library.open(home) as lib:
            lib.import_embeddings([f"/photos/{n // 1000:03d}/IMG_{n:06d}.jpg" for n in range(args.items)], vecs, model=spec)
        (home / "filled").write_text("ok")

    with Library.open(home) as lib:
        t0 = time.perf_counter()
        lib.search("warm up", top=10)  # loads the model and the index
        first = time.perf_counter() - t0
        warm, cached = [], []
        for q in QUERIES:
            t0 = time.perf_counter()
            lib.search(q, top=10)
            warm.append(time.perf_counter() - t0)
        for q in QUERIES[:50]:
            t0 = time.perf_counter()
            lib.search(q, top=10)
            cached.append(time.perf_counter() - t0)
        status = lib.status()
        # Baseline: padded 77-token encode, then numpy over every stored vector.
        enc = lib.encoder(spec)
        model = lib.active_model()
        assert model is not None
        ids, stored = lib.catalog.vectors(model.id, "image")
        naive = []
        for q in QUERIES[:40]:
            t0 = time.perf_counter()
            with torch.no_grad():
                v = torch.nn.functional.normalize(enc.model.encode_text(enc.tokenizer([q])), dim=-1)[0].numpy()  # type: ignore[operator]
            top = np.argsort(-(stored @ v))[:10]
            lib.catalog.items([int(i) for i in ids[top]])
            naive.append(time.perf_counter() - t0)

    exe = str(Path(sys.executable).with_name("clipdex"))
    env = {**os.environ, "CLIPDEX_HOME": str(home)}
    cold = []
    for q in QUERIES[:3]:
        t0 = time.perf_counter()
        subprocess.run([exe, "search", q, "--top", "10"], env=env, check=True, capture_output=True)
        cold.append(time.perf_counter() - t0)
    imports = []
    for mod in ("pass", "import torch", "import torch, open_clip"):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", mod], check=True)
        imports.append(time.perf_counter() - t0)

    rows = [
        ("baseline: padded encode + numpy scan, p50", f"{pct(naive, 50):.1f} ms", "1.00x", ""),
        ("warm Library.search p50", f"{pct(warm, 50):.1f} ms", f"{np.median(naive) / np.median(warm):.1f}x faster", "<= 50 ms"),
        ("warm Library.search p99", f"{pct(warm, 99):.1f} ms", "", ""),
        ("repeated query (text cache) p50", f"{pct(cached, 50):.1f} ms", "", ""),
        ("first search in a process", f"{first * 1000:.0f} ms", "model + index load", ""),
        ("cold `clipdex search` process", f"{np.median(cold):.2f} s", "median of 3", "as fast as torch allows"),
        ("  of which: python start", f"{imports[0]:.2f} s", "", ""),
        ("  of which: import torch", f"{imports[1] - imports[0]:.2f} s", "", ""),
        ("  of which: import open_clip", f"{imports[2] - imports[1]:.2f} s", "", ""),
        ("  of which: model load + search", f"{np.median(cold) - imports[2]:.2f} s", "", ""),
    ]
    print(f"\nquery_latency: {args.items:,} items, index {status.index['type']}, ViT-B-32-256, "
          f"{len(os.sched_getaffinity(0))} cores")
    w = max(len(r[0]) for r in rows)
    for name, fig, note, target in rows:
        print(f"{name:{w}}  {fig:>10}  {note:>20}  {target}")
    print("reproduce: .venv/bin/python benchmarks/query_latency.py")


if __name__ == "__main__":
    main()
