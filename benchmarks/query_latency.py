"""Warm query latency at 100k items: each choice's gain on its own, and Library.search before/after.

    .venv/bin/python benchmarks/query_latency.py            # --items 100000 --queries 40
    .venv/bin/python benchmarks/query_latency.py --avx2     # torch limited to AVX2 (ONNX Runtime cannot be)

ViT-B-32-256 with random weights, written here as a checkpoint (no hub; speed does not
depend on the weights). The library holds `--items` 512-d unit vectors from the
clustered mixture of benchmarks/search_scale.py, imported with `Library.import_embeddings`.

Everything is timed in one loop, interleaved: each query runs every variant once, in an
order rotated from query to query, so all of them see the same machine load; the table
gives medians (p50) and p90 over the queries. Every query text is distinct, so no cache
helps. Each gain is a ratio against a baseline that differs from it in one choice only:

- text tower, token trimming: the same precision and engine with the query padded to 77 tokens;
- text tower, precision: bf16 autocast against fp32, both trimmed (only on CPUs with native bf16);
- text tower, engine: ONNX Runtime (the library's exported tower) against torch, both fp32 and trimmed;
  ONNX Runtime int8 (dynamic quantisation of that export) is shown for comparison, with its
  cosine to fp32 on fixed captions beside the fidelity guard of issue 12 (mean ≥ 0.995, min ≥ 0.98);
- index: the library's IVF index against exact flat search over the same vectors, with
  recall@10 of the IVF index against the exact top 10 (held-out draws from the mixture);
- end to end, warm `Library.search` (encode, index, catalog look-up): the torch path
  (`CLIPDEX_NO_EXPORT=1`) at fp32 and at `auto` against the exported text tower.

Fidelity: the ONNX trimmed tower against torch fp32 padded (cosine ≥ 0.9999, the export's own
check), and a negative control that must fail it: the ids cut one token short (the end-of-text
token lost).
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator

AVX2_LIMITS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
if "--avx2" in sys.argv and os.environ.get("ATEN_CPU_CAPABILITY") != "avx2":  # the limits act only at start
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **AVX2_LIMITS})

import faiss  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.search_scale import mixture  # noqa: E402
from indexer import derived  # noqa: E402
from indexer.derived import TEXT_ENCODER, Derived  # noqa: E402
from indexer.encode import _encode_text_trimmed  # noqa: E402
from indexer.models import Encoder, ModelSpec  # noqa: E402
from indexer.precision_guard import cpu_has_native_bf16  # noqa: E402
from indexer.onnx_encode import OnnxTextEncoder  # noqa: E402
from indexer.onnx_export import VALIDATION_CAPTIONS  # noqa: E402
from retrieval.library import Library  # noqa: E402

MODEL = "ViT-B-32-256"
TARGET_P50_MS = 50.0
GUARD_MEAN, GUARD_MIN = 0.995, 0.98
EXPORT_COS = 0.9999
WORDS = (
    ["red", "old", "quiet", "snowy", "sunny", "misty", "busy", "empty", "golden", "tiny", "wet", "bright"],
    ["car", "boat", "dog", "bridge", "market", "garden", "tower", "beach", "train", "kitchen", "forest", "street"],
    ["at dusk", "in winter", "by the sea", "in the city", "at noon", "after rain", "in spring", "at night"],
)


def distinct_queries() -> Iterator[str]:
    for a, t, p in itertools.product(*WORDS):
        yield f"a {a} {t} {p}"


def cpu_line() -> str:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), platform.processor())
    flags = next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), [])
    shown = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8") if f in flags]
    return f"CPU: {name}, {len(os.sched_getaffinity(0))} cores, flags: {' '.join(shown) or 'none of avx2/avx512/amx'}"


def prepare(work: Path, items: int) -> tuple[Path, ModelSpec]:
    """The checkpoint and the filled library, kept in `work` between runs."""
    import open_clip
    from safetensors.torch import save_file

    weights = work / f"{MODEL}-random.safetensors"
    if not weights.exists():
        torch.manual_seed(0)
        model = open_clip.create_model(MODEL, pretrained=None)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    spec = ModelSpec.parse(MODEL, weights)
    home = work / f"library-{items}"
    if not (home / "filled").exists():
        vectors = mixture(items, seed=1)  # (N, 512)
        print(f"importing {items:,} vectors ...", file=sys.stderr)
        with Library.open(home) as lib:
            lib.import_embeddings([f"/photos/{n // 1000:03d}/IMG_{n:06d}.jpg" for n in range(items)], vectors, model=spec)
        (home / "filled").write_text("ok")
    return home, spec


@contextmanager
def exports_off() -> Iterator[None]:
    os.environ["CLIPDEX_NO_EXPORT"] = "1"
    try:
        yield
    finally:
        os.environ.pop("CLIPDEX_NO_EXPORT", None)


def text_tower_export(lib: Library, spec: ModelSpec) -> Derived:
    """The library's exported text tower, exported now (by a torch-path search) if there is none."""
    lib.search("warm up", top=1, model=spec)
    row = lib.active_model()
    assert row is not None
    found = derived.lookup(lib.home, row.fingerprint, TEXT_ENCODER)
    if not isinstance(found, Derived):
        raise SystemExit(f"no exported text tower: {found}")
    lib.search("warm up again", top=1, model=spec)  # now through the export
    return found


def quantised(export: Derived, work: Path) -> Any:
    """An ONNX Runtime int8 session of the export (dynamic quantisation), made once in `work`."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    import hashlib

    data = {f.name: f.sha256 for f in export.tag.files}  # the graph's hash alone misses its external weights
    key = hashlib.sha256(repr(sorted(data.items())).encode()).hexdigest()[:16]
    out = work / f"text-int8-{key}.onnx"
    if not out.exists():
        quantize_dynamic(str(export.path), str(out), weight_type=QuantType.QInt8)
    return ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])


def torch_padded(enc: Encoder) -> Callable[[str], object]:
    def run(q: str) -> object:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=enc.precision == "bf16"):
            return enc.model.encode_text(enc.tokenizer([q]))  # type: ignore[operator]

    return run


def torch_trimmed(enc: Encoder) -> Callable[[str], object]:
    def run(q: str) -> object:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=enc.precision == "bf16"):
            return _encode_text_trimmed(enc.model, enc.tokenizer([q]))

    return run


def cut(ids: np.ndarray, less: int = 0) -> np.ndarray:
    return ids[:, : int((ids != 0).sum(axis=1).max()) - less]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a.astype(np.float64) * b).sum(axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=40, help="queries per variant (each a distinct text)")
    ap.add_argument("--avx2", action="store_true", help="limit torch to AVX2 (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "clipdex-query-latency")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    home, spec = prepare(args.work, args.items)
    bf16 = cpu_has_native_bf16() and not args.avx2

    lib_onnx = Library.open(home, device="cpu", precision="fp32")
    libs = [lib_onnx]
    with exports_off():
        lib_fp32 = Library.open(home, device="cpu", precision="fp32")
        lib_auto = Library.open(home, device="cpu", precision="bf16")  # torch's bf16 text path, when used
        libs += [lib_fp32, lib_auto] if bf16 else [lib_fp32]
        for lib in libs[1:]:
            lib.search("warm up", top=1, model=spec)
    export = text_tower_export(lib_onnx, spec)
    enc32 = lib_fp32.encoder(spec)
    enc16 = replace(enc32, precision="bf16")  # the same weights under bf16 autocast, as `--precision bf16` runs them
    onnx = OnnxTextEncoder.open(export)
    int8 = quantised(export, args.work)
    row = lib_onnx.active_model()
    assert row is not None
    ivf = lib_onnx.indexes.get(row, "image")
    item_ids, stored = lib_onnx.catalog.vectors(row.id, "image")  # (N,), (N, D): what the index holds
    exact = faiss.IndexFlatIP(stored.shape[1])
    exact.add(stored)
    probes = mixture(args.queries, seed=2)  # held-out draws: index queries and recall

    def onnx_run(session: Any, trim: bool) -> Callable[[str], object]:
        return lambda q: session.run(["vectors"], {"token_ids": cut(onnx.tokenize([q])) if trim else onnx.tokenize([q])})

    def searcher(lib: Library, off: bool) -> Callable[[str], object]:
        def run(q: str) -> object:
            if not off:
                return lib.search(q, top=10, model=spec)
            with exports_off():
                return lib.search(q, top=10, model=spec)

        return run

    variants: dict[str, Callable[[str], object]] = {
        "torch fp32, padded to 77": torch_padded(enc32),
        "torch fp32, trimmed": torch_trimmed(enc32),
    }
    if bf16:
        variants["torch bf16, padded to 77"] = torch_padded(enc16)
        variants["torch bf16, trimmed"] = torch_trimmed(enc16)
    variants["onnx fp32, padded to 77"] = onnx_run(onnx.session, trim=False)
    variants["onnx fp32, trimmed"] = onnx_run(onnx.session, trim=True)
    variants["onnx int8, trimmed"] = onnx_run(int8, trim=True)
    index_variants: dict[str, Callable[[int], object]] = {
        "exact flat": lambda i: exact.search(probes[i : i + 1], 10),
        f"{ivf.type_name} (library)": lambda i: ivf.search(probes[i], 10),
    }
    variants["Library.search, torch fp32"] = searcher(lib_fp32, off=True)
    if bf16:
        variants["Library.search, torch bf16"] = searcher(lib_auto, off=True)
    variants["Library.search, onnx fp32 (exported)"] = searcher(lib_onnx, off=False)

    texts = distinct_queries()
    names = list(variants) + list(index_variants)
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(args.queries):
        k = i % len(names)
        for name in names[k:] + names[:k]:  # rotate the order every query
            t0 = time.perf_counter()
            if name in variants:
                variants[name](next(texts))
            else:
                index_variants[name](i)
            times[name].append((time.perf_counter() - t0) * 1000)

    # recall@10 of the library's index against exact search, and fidelity of the trimmed export
    _, truth = exact.search(probes, 10)
    truth = item_ids[truth]  # positions → item ids
    _, got = ivf.search(probes, 10)
    recall = float(np.mean([len(set(g) & set(t)) / 10 for g, t in zip(got.tolist(), truth.tolist())]))
    caps = list(VALIDATION_CAPTIONS)
    ids = onnx.tokenize(caps)
    with torch.no_grad():
        reference = torch.nn.functional.normalize(enc32.model.encode_text(torch.from_numpy(ids)), dim=-1).numpy()  # type: ignore[operator]
    fp32_vecs = np.concatenate([onnx.session.run(["vectors"], {"token_ids": cut(ids[j : j + 1])})[0] for j in range(len(caps))])
    int8_vecs = np.concatenate([int8.run(["vectors"], {"token_ids": cut(ids[j : j + 1])})[0] for j in range(len(caps))])
    short_vecs = np.concatenate([onnx.session.run(["vectors"], {"token_ids": cut(ids[j : j + 1], 1)})[0] for j in range(len(caps))])
    fidelity = (cosines(fp32_vecs, reference), cosines(int8_vecs, fp32_vecs), cosines(short_vecs, reference))
    report(args, times, recall, fidelity, ivf.type_name, bf16)
    for lib in (lib_onnx, lib_fp32, lib_auto):
        lib.close()


def report(
    args: argparse.Namespace, times: dict[str, list[float]], recall: float,
    fidelity: tuple[np.ndarray, np.ndarray, np.ndarray], index_name: str, bf16: bool,
) -> None:
    p = {n: (float(np.median(v)), float(np.percentile(v, 90))) for n, v in times.items()}
    base = {  # each row's baseline: the same choices but one
        "torch fp32, trimmed": ("torch fp32, padded to 77", "trimming"),
        "torch bf16, padded to 77": ("torch fp32, padded to 77", "bf16"),
        "torch bf16, trimmed": ("torch bf16, padded to 77", "trimming"),
        "onnx fp32, padded to 77": ("torch fp32, padded to 77", "onnx"),
        "onnx fp32, trimmed": ("onnx fp32, padded to 77", "trimming"),
        "onnx int8, trimmed": ("onnx fp32, trimmed", "int8"),
        f"{index_name} (library)": ("exact flat", index_name),
        "Library.search, torch bf16": ("Library.search, torch fp32", "bf16"),
        "Library.search, onnx fp32 (exported)": ("Library.search, torch fp32", "export"),
    }
    extra = {  # second comparisons, same run
        "onnx fp32, trimmed": ("torch fp32, trimmed", "onnx"),
        "torch bf16, trimmed": ("torch fp32, trimmed", "bf16"),
        "Library.search, onnx fp32 (exported)": ("Library.search, torch bf16", "export"),
    }
    limited = ", torch limited to AVX2 (ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2; ONNX Runtime has no such limit)" if args.avx2 else ""
    print(f"\nwarm query latency: {args.items:,} items, {MODEL} (random weights), {args.queries} distinct queries per row, "
          f"interleaved (order rotated per query){limited}")
    print(cpu_line() + f", load average {os.getloadavg()[0]:.1f}, torch {torch.__version__.split('+')[0]}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'step / variant':40} {'p50 ms':>8} {'p90 ms':>8}  gain at p50 (vs the same but one choice)")
    sections = [("text tower, one query", lambda n: not n.startswith(("Library", "exact", index_name))),
                ("index, top 10", lambda n: n.startswith(("exact", index_name))),
                ("end to end, warm Library.search top 10", lambda n: n.startswith("Library"))]
    for title, keep in sections:
        print(f"-- {title}")
        for name in [n for n in times if keep(n)]:
            gains = []
            for table in (base, extra):
                if name in table and table[name][0] in p:
                    ref, what = table[name]
                    gains.append(f"{p[ref][0] / p[name][0]:.2f}x ({what}; vs {ref})")
            note = "; ".join(gains) if gains else "baseline"
            if name.startswith(index_name):
                note += f"; recall@10 {recall:.3f} vs exact"
            print(f"{name:40} {p[name][0]:8.1f} {p[name][1]:8.1f}  {note}")
    after = p["Library.search, onnx fp32 (exported)"][0]
    ok = lambda c: "meets" if c else "MISSES"  # noqa: E731
    fp32_cos, int8_cos, short_cos = fidelity
    print(f"target: warm Library.search p50 <= {TARGET_P50_MS:.0f} ms with the exported tower: {after:.1f} ms, {ok(after <= TARGET_P50_MS)}")
    print(f"fidelity: onnx fp32 trimmed vs torch fp32 padded, cos mean/min {fp32_cos.mean():.6f} / {fp32_cos.min():.6f} "
          f"(>= {EXPORT_COS}: {ok(fp32_cos.min() >= EXPORT_COS)})")
    print(f"control: ids cut one token short, cos mean/min {short_cos.mean():.6f} / {short_cos.min():.6f} "
          f"(must fail >= {EXPORT_COS}: {'fails, as it must' if short_cos.min() < EXPORT_COS else 'PASSES: the check is blind'})")
    print(f"onnx int8 vs onnx fp32 on {len(int8_cos)} fixed captions: cos mean/min {int8_cos.mean():.4f} / {int8_cos.min():.4f} "
          f"(guard mean >= {GUARD_MEAN}, min >= {GUARD_MIN}: "
          f"{ok(int8_cos.mean() >= GUARD_MEAN and int8_cos.min() >= GUARD_MIN)}; random weights say little about trained ones)")
    if not bf16:
        print("bf16 rows left out: " + ("torch is limited to AVX2" if args.avx2 else "this CPU has no native bf16"))
    print(f"reproduce: .venv/bin/python benchmarks/query_latency.py --items {args.items} --queries {args.queries}"
          + (" --avx2" if args.avx2 else ""))


if __name__ == "__main__":
    main()
