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

The OpenMP wait policy (torch's and FAISS's thread pools) is settled here too: two
servers run side by side over the same library, one with `OMP_WAIT_POLICY=PASSIVE`
and one with OpenMP's default (the variable set empty: OpenMP ignores it with a
warning, and `clipdex serve` keeps a value it is given), and every query goes to both,
interleaved: text queries, "more like this", and photo uploads (the torch image
tower, where OpenMP's threads work).
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

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# The in-process baseline runs with the OpenMP wait policy `clipdex serve` sets for itself
# (importing retrieval.server sets it, before torch and FAISS load), so it differs from the
# server only by HTTP.
from retrieval.server import SERVE_OMP_WAIT_POLICY  # noqa: E402
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


POLICIES = {"PASSIVE": "PASSIVE", "OpenMP default": ""}  # name → OMP_WAIT_POLICY given to a server


def start_server(home: Path, spec: ModelSpec, omp_wait_policy: str) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    entry = Path(sys.executable).parent / "clipdex"
    cmd = [str(entry)] if entry.exists() else [sys.executable, "-c", "from cli.app import main; main()"]
    cmd += ["serve", "--library", str(home), "--port", str(port), "--model", spec.name, "--device", "cpu"]
    if spec.checkpoint:
        cmd += ["--checkpoint", spec.checkpoint]
    env = {k: v for k, v in os.environ.items() if k != "CLIPDEX_TOKEN"}
    env["OMP_WAIT_POLICY"] = omp_wait_policy
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"clipdex serve exited with status {proc.returncode}")
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


def photo_upload(seed: int) -> bytes:
    """A 640x480 JPEG of smooth noise: the bytes a photo query uploads."""
    import io

    from PIL import Image

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(small).resize((640, 480), Image.Resampling.BICUBIC).save(out, "JPEG", quality=90)
    return out.getvalue()


def http_post_photo(client: httpx.Client, data: bytes) -> Callable[[], object]:
    def call() -> object:
        r = client.post("/api/v1/search/image", files={"file": ("q.jpg", data, "image/jpeg")}, data={"top": str(TOP)})
        r.raise_for_status()
        return r.json()

    return call


def measure(
    clients: dict[str, httpx.Client], lib: Library, spec: ModelSpec, n: int, items: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Every kind of query to every server, and text queries in process, in one loop whose
    order rotates per round, so all of them see the same load on a shared machine. Each
    text is sent once; "server search ms" (Server-Timing) is kept per server."""
    texts = iter(queries(len(clients) * n + n + 40))
    photos = [photo_upload(i) for i in range(8)]
    ids = np.random.default_rng(1).integers(1, items + 1, n + 4)
    server_ms: dict[str, list[float]] = {name: [] for name in clients}
    calls: dict[str, Callable[[int], Callable[[], object]]] = {}
    def text(c: httpx.Client, kept: list[float]) -> Callable[[int], Callable[[], object]]:
        return lambda i: http_get(c, "/api/v1/search", {"q": next(texts), "top": TOP}, kept)

    def similar(c: httpx.Client) -> Callable[[int], Callable[[], object]]:
        return lambda i: http_get(c, f"/api/v1/items/{ids[i]}/similar", {"top": TOP})

    def photo(c: httpx.Client) -> Callable[[int], Callable[[], object]]:
        return lambda i: http_post_photo(c, photos[i % len(photos)])

    def in_process(i: int) -> Callable[[], object]:
        q = next(texts)
        return lambda: lib.search(q, top=TOP, model=spec, allow_files=False)

    for name, client in clients.items():
        calls[f"{name}: text"] = text(client, server_ms[name])
        calls[f"{name}: similar"] = similar(client)
        calls[f"{name}: photo"] = photo(client)
    calls["in-process Library.search(TEXT)"] = in_process
    for i in range(4):  # warm every path: sessions, models, index
        timed_ms([make(i) for make in calls.values()])
    for k in server_ms:
        server_ms[k].clear()
    names = list(calls)
    out: dict[str, list[float]] = {name: [] for name in names}
    for i in range(n):
        order = names[i % len(names):] + names[: i % len(names)]
        for name, ms in zip(order, timed_ms([calls[name](i) for name in order])):
            out[name].append(float(ms))
    result = {name: np.asarray(v) for name, v in out.items()}
    return result, {name: np.asarray(v) for name, v in server_ms.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--model", default="ViT-B-32-256", help="architecture whose text encoder serves the queries")
    parser.add_argument("--keep", action="store_true", help="keep the temporary library")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="clipdex-bench-"))
    home = work / "library"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        spec = model_spec(args.model, work)
        import_s = fill(home, args.items, spec)
        clients: dict[str, httpx.Client] = {}
        for name, policy in POLICIES.items():  # one after the other: the first one's warm-up exports the text tower
            proc, url = start_server(home, spec, policy)
            procs.append(proc)
            clients[name] = httpx.Client(base_url=url, timeout=120)
        with Library.open(home, device="cpu") as lib:
            status = clients["PASSIVE"].get("/api/v1/status").json()
            times, server_ms = measure(clients, lib, spec, args.queries, args.items)
        for c in clients.values():
            c.close()
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=60)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    report(args, spec, status, import_s, times, server_ms)


def report(
    args: argparse.Namespace, spec: ModelSpec, status: dict[str, object], import_s: float,
    times: dict[str, np.ndarray], server_ms: dict[str, np.ndarray],
) -> None:
    raw_index = status.get("index")
    index: dict[str, object] = raw_index if isinstance(raw_index, dict) else {}
    p = lambda a, q: float(np.percentile(a, q))  # noqa: E731
    chosen = "PASSIVE" if SERVE_OMP_WAIT_POLICY == "PASSIVE" else "OpenMP default"
    http_text = times[f"{chosen}: text"]
    server_text = server_ms[chosen]  # paired with http_text, query by query
    in_process = times["in-process Library.search(TEXT)"]
    verdict = "meets" if p(http_text, 50) <= TARGET_P50_MS else "MISSES"
    weights = "random weights" if spec.checkpoint else "built-in weights"
    print(f"clipdex serve, warm query latency: {status.get('images'):,} images, {spec.name} ({weights}), "
          f"{index.get('type')} index, top={TOP}, {args.queries} queries of each kind per server, interleaved")
    print(f"{cpu_line()}, load average {os.getloadavg()[0]:.1f}")
    print(f"(library filled through Library.import_embeddings in {import_s:.1f} s; "
          f"`clipdex serve` sets OMP_WAIT_POLICY={SERVE_OMP_WAIT_POLICY or '(nothing)'} unless it is set)\n")
    print(f"{'measure':52} {'p50 ms':>8} {'p99 ms':>8}  note")
    for kind, path in (("text", "GET /api/v1/search?q=TEXT"), ("similar", "GET /api/v1/items/ID/similar"),
                       ("photo", "POST /api/v1/search/image")):
        for name in POLICIES:
            a = times[f"{name}: {kind}"]
            note = ""
            if name != chosen:
                b = times[f"{chosen}: {kind}"]
                note = f"{p(a, 50) / p(b, 50):.2f}x the p50 of {chosen}"
            elif kind == "text":
                note = f"p50 <= {TARGET_P50_MS:.0f} ms: {verdict}"
            print(f"{'HTTP ' + path + ' (' + name + ')':52} {p(a, 50):8.1f} {p(a, 99):8.1f}  {note}")
        if kind == "text":
            print(f"{'  of which inside the server (' + chosen + ')':52} {p(server_text, 50):8.1f} {p(server_text, 99):8.1f}  Server-Timing header")
    print(f"{'in-process Library.search(TEXT)':52} {p(in_process, 50):8.1f} {p(in_process, 99):8.1f}  baseline")
    print(f"\nHTTP / in-process at p50: {p(http_text, 50) / p(in_process, 50):.2f}x "
          f"(+{p(http_text, 50) - p(in_process, 50):.1f} ms; HTTP, routing and JSON outside the search: "
          f"{p(http_text - server_text, 50):.1f} ms at p50)")
    print(f"reproduce: .venv/bin/python benchmarks/server_latency.py --items {args.items} --queries {args.queries} "
          f"--model {args.model}")


def cpu_line() -> str:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "unknown CPU")
    flags = next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), [])
    shown = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16") if f in flags]
    return f"CPU: {name}, {len(os.sched_getaffinity(0))} cores, flags: {' '.join(shown) or 'none of avx2/avx512/amx'}"


if __name__ == "__main__":
    main()
