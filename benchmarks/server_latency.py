"""Warm query latency of `clipdex serve` over HTTP, at 100k items on CPU.

    .venv/bin/python benchmarks/server_latency.py                     # 100k items, ViT-B-32-256
    .venv/bin/python benchmarks/server_latency.py --model clipdex-tiny --items 20000 --queries 100

The default model is the product's default architecture with random weights, written
by this script as a checkpoint (no hub here): speed does not depend on the weights.
Fills a fresh library with random unit vectors through the public
`Library.import_embeddings` (no photo files are needed to time search), starts
`clipdex serve` as a subprocess, and times requests end to end with one
keep-alive HTTP client: a text query (text encoder + FAISS + catalog + JSON) and
"more like this" (no encoder). The in-run baseline is text queries through
`Library.search` in this process, interleaved with the HTTP ones so both see the
same machine load; the difference is the HTTP layer. Every query text is
distinct, so no query cache helps either side. Target: p50 <= 60 ms.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

# The OpenMP wait policy `clipdex serve` sets for itself (retrieval/server/__init__.py), so the
# in-process baseline differs from the server only by HTTP. Set before torch and faiss load.
USER_OMP_WAIT_POLICY = os.environ.get("OMP_WAIT_POLICY")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import httpx  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from retrieval.library import Library  # noqa: E402
from indexer.models import ModelSpec  # noqa: E402

TARGET_P50_MS = 60.0
TOP = 20
ADJECTIVES = ["red", "old", "quiet", "snowy", "sunny", "misty", "busy", "empty", "golden", "tiny", "wet", "bright"]
THINGS = ["car", "boat", "dog", "bridge", "market", "garden", "tower", "beach", "train", "kitchen", "forest", "street"]
PLACES = ["at dusk", "in winter", "by the sea", "in the city", "at noon", "after rain", "in spring", "at night"]


def queries(n: int, skip: int = 0) -> list[str]:
    """n distinct query texts (after the first `skip`), in a fixed order."""
    combos = (f"a {a} {t} {p}" for a, t, p in itertools.product(ADJECTIVES, THINGS, PLACES))  # 1152
    out = list(itertools.islice(combos, skip, skip + n))
    if len(out) < n:
        raise SystemExit(f"at most {len(ADJECTIVES) * len(THINGS) * len(PLACES) - skip} distinct queries")
    return out


def model_spec(name: str, work: Path) -> ModelSpec:
    """The built-in tiny model, or `name` with random weights saved as a local checkpoint."""
    if name == "clipdex-tiny":
        return ModelSpec.parse(name)
    import open_clip
    from safetensors.torch import save_file

    weights = work / f"{name}-random.safetensors"
    model = open_clip.create_model(name, pretrained=None)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    return ModelSpec.parse(name, weights)


def fill(home: Path, items: int, spec: ModelSpec) -> float:
    """Import `items` random unit vectors as image items; returns the seconds it took."""
    with Library.open(home) as lib:
        if not hasattr(lib, "import_embeddings"):
            raise SystemExit(
                "this checkout has no Library.import_embeddings yet (it lands on main); "
                "run the benchmark on a tree that has it"
            )
        dim = lib.encoder(spec).dim
        vectors = np.random.default_rng(0).standard_normal((items, dim)).astype(np.float32)  # (N, D)
        names = [f"/clipdex-bench/photos/{i // 1000:03d}/IMG_{i:06d}.jpg" for i in range(items)]
        start = time.perf_counter()
        lib.import_embeddings(names, vectors, model=spec)
        return time.perf_counter() - start


def start_server(home: Path, spec: ModelSpec) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    entry = Path(sys.executable).parent / "clipdex"
    cmd = [str(entry)] if entry.exists() else [sys.executable, "-c", "from cli.app import main; main()"]
    cmd += ["serve", "--library", str(home), "--port", str(port), "--model", spec.name, "--device", "cpu"]
    if spec.checkpoint:
        cmd += ["--checkpoint", spec.checkpoint]
    env = {k: v for k, v in os.environ.items() if k != "CLIPDEX_TOKEN"}
    if USER_OMP_WAIT_POLICY is None:
        env.pop("OMP_WAIT_POLICY", None)  # time the server with the policy it picks itself
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"clipdex serve exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            if httpx.get(url + "/api/v1/status", timeout=5).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("clipdex serve did not start")


def timed_ms(calls: list[Callable[[], object]]) -> np.ndarray:
    out = np.empty(len(calls))
    for i, call in enumerate(calls):
        start = time.perf_counter()
        call()
        out[i] = (time.perf_counter() - start) * 1000
    return out


def http_get(
    client: httpx.Client, path: str, params: dict[str, object], server_ms: list[float] | None = None
) -> Callable[[], object]:
    """A timed call: one GET, its JSON decoded; the server's own search time goes to server_ms."""
    def call() -> object:
        r = client.get(path, params=params)  # type: ignore[arg-type]
        r.raise_for_status()
        if server_ms is not None:
            server_ms.append(float(r.headers["server-timing"].split("dur=")[1]))
        return r.json()

    return call


def interleaved(
    client: httpx.Client, lib: Library, spec: ModelSpec, n: int, server_ms: list[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Text queries over HTTP and in-process, alternating which goes first, so both see the
    same load on a shared machine. Each side gets its own distinct texts."""
    def over_http(q: str) -> Callable[[], object]:
        return http_get(client, "/api/v1/search", {"q": q, "top": TOP}, server_ms)

    def in_process(q: str) -> Callable[[], object]:
        return lambda: lib.search(q, top=TOP, model=spec, allow_files=False)

    warm = queries(40, skip=2 * n)
    timed_ms([over_http(q) for q in warm[:20]] + [in_process(q) for q in warm[20:]])
    server_ms.clear()
    texts = queries(2 * n)
    http_ms, lib_ms = np.empty(n), np.empty(n)
    for i in range(n):
        a, b = timed_ms([over_http(texts[2 * i]), in_process(texts[2 * i + 1])][:: 1 if i % 2 == 0 else -1])
        http_ms[i], lib_ms[i] = (a, b) if i % 2 == 0 else (b, a)
    return http_ms, lib_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--model", default="ViT-B-32-256", help="architecture whose text encoder serves the queries")
    parser.add_argument("--keep", action="store_true", help="keep the temporary library")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="clipdex-bench-"))
    home = work / "library"
    try:
        spec = model_spec(args.model, work)
        import_s = fill(home, args.items, spec)
        proc, url = start_server(home, spec)
        try:
            with httpx.Client(base_url=url, timeout=60) as client, Library.open(home, device="cpu") as lib:
                status = client.get("/api/v1/status").json()
                server_ms: list[float] = []
                http_text, in_process = interleaved(client, lib, spec, args.queries, server_ms)
                ids = np.random.default_rng(1).integers(1, args.items + 1, args.queries)
                http_item = timed_ms([http_get(client, f"/api/v1/items/{i}/similar", {"top": TOP}) for i in ids])
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    report(args, spec, status, import_s, http_text, np.asarray(server_ms), http_item, in_process)


def report(
    args: argparse.Namespace, spec: ModelSpec, status: dict[str, object], import_s: float,
    http_text: np.ndarray, server_text: np.ndarray, http_item: np.ndarray, in_process: np.ndarray,
) -> None:
    raw_index = status.get("index")
    index: dict[str, object] = raw_index if isinstance(raw_index, dict) else {}
    p = lambda a, q: float(np.percentile(a, q))  # noqa: E731
    verdict = "meets" if p(http_text, 50) <= TARGET_P50_MS else "MISSES"
    weights = "random weights" if spec.checkpoint else "built-in weights"
    print(f"clipdex serve, warm query latency: {status.get('images'):,} images, {spec.name} ({weights}), "
          f"{index.get('type')} index, CPU ({os.cpu_count()} cores), top={TOP}, {args.queries} distinct queries each")
    print(f"(library filled through Library.import_embeddings in {import_s:.1f} s)\n")
    rows = [
        ("HTTP  GET /api/v1/search?q=TEXT", http_text, f"p50 <= {TARGET_P50_MS:.0f} ms: {verdict}"),
        ("  of which inside the server's search", server_text, "Server-Timing header"),
        ("HTTP  GET /api/v1/items/ID/similar", http_item, ""),
        ("in-process Library.search(TEXT)", in_process, "baseline"),
    ]
    print(f"{'measure':38} {'p50 ms':>8} {'p99 ms':>8}  target")
    for name, a, note in rows:
        print(f"{name:38} {p(a, 50):8.1f} {p(a, 99):8.1f}  {note}")
    print(f"\nHTTP / in-process at p50: {p(http_text, 50) / p(in_process, 50):.2f}x "
          f"(+{p(http_text, 50) - p(in_process, 50):.1f} ms; HTTP, routing and JSON outside the search: "
          f"{p(http_text - server_text, 50):.1f} ms at p50)")
    print(f"reproduce: .venv/bin/python benchmarks/server_latency.py --items {args.items} --queries {args.queries} "
          f"--model {args.model}")


if __name__ == "__main__":
    main()
