"""Cold start of a text query: ONNX Runtime and the torch-free tokenizer, against torch and open_clip.

    .venv/bin/python benchmarks/cold_imports.py [--model ViT-B-32-256] [--checkpoint FILE] [--rounds 5]

Each round starts two fresh processes, interleaved (so drift on a shared machine hits
both alike), each answering one query from the same library:

- onnx: `import onnxruntime` + `indexer.tokenizer`, the model's fingerprint from the
  fingerprint cache (`indexer.fingerprints.for_spec`), the derived text encoder found by
  `indexer.derived.lookup`, an InferenceSession, one query. No torch, no open_clip.
- torch: `import torch, open_clip`, `load_encoder` (built without random init, its
  fingerprint cached), one query through `encode_texts`.

Without `--checkpoint`, ViT-B-32-256 gets random weights written here (no hub), and
the text tower is exported once before the rounds. Prints medians per stage and the
peak RSS of each process (VmHWM), as a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUERY = "kids playing on the beach at sunset"

_ONNX = """
import json, sys, time
t0 = time.perf_counter()
def peak_rss_mb():  # VmHWM: unlike ru_maxrss, not inherited from the parent across fork + exec
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
import onnxruntime
from indexer.derived import TEXT_ENCODER, lookup
from indexer.fingerprints import for_spec
from indexer.onnx_encode import OnnxTextEncoder
t1 = time.perf_counter()
home, label, query = sys.argv[1:4]
from pathlib import Path
found = lookup(Path(home), for_spec(Path(home), label), TEXT_ENCODER)
encoder = OnnxTextEncoder.open(found)
t2 = time.perf_counter()
vector = encoder.encode([query])
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "query_s": t3 - t2, "total_s": t3 - t0,
                  "peak_rss_mb": peak_rss_mb(),
                  "torch_imported": "torch" in sys.modules, "head": vector[0, :4].tolist()}))
"""

_TORCH = """
import json, sys, time
t0 = time.perf_counter()
def peak_rss_mb():  # VmHWM: unlike ru_maxrss, not inherited from the parent across fork + exec
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
import torch, open_clip
from indexer.encode import encode_texts
from indexer.models import ModelSpec, load_encoder
t1 = time.perf_counter()
home, name, checkpoint, query = sys.argv[1:5]
from pathlib import Path
encoder = load_encoder(ModelSpec.parse(name, checkpoint or None), "cpu", "fp32", home=Path(home))
t2 = time.perf_counter()
vector = encode_texts(encoder, [query])
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "query_s": t3 - t2, "total_s": t3 - t0,
                  "peak_rss_mb": peak_rss_mb(),
                  "torch_imported": True, "head": vector[0, :4].tolist()}))
"""


def prepare(home: Path, name: str, checkpoint: str | None, scratch: Path) -> tuple[str, str]:
    """Export the text tower into the library at `home`; return (checkpoint, spec label)."""
    sys.path.insert(0, str(ROOT))
    from indexer.models import ModelSpec, load_encoder
    from indexer.onnx_export import text_encoder

    if checkpoint is None:
        import open_clip
        import torch
        from safetensors.torch import save_file

        torch.manual_seed(0)
        model = open_clip.create_model(name, pretrained=None)
        checkpoint = str(scratch / f"{name}-random.safetensors")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, checkpoint)
    spec = ModelSpec.parse(name, checkpoint)
    encoder = load_encoder(spec, "cpu", "fp32", home=home)
    derived = text_encoder(encoder, home)
    size = sum(f.size_bytes for f in derived.tag.files)
    print(f"exported {derived.path} and its weights ({size / 1e6:.0f} MB), "
          f"validation {derived.tag.validation}", file=sys.stderr)
    return checkpoint, spec.label


def run(code: str, *args: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="ViT-B-32-256")
    ap.add_argument("--checkpoint")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "lib"
        checkpoint, label = prepare(home, args.model, args.checkpoint, Path(tmp))
        results: dict[str, list[dict[str, float]]] = {"onnx": [], "torch": []}
        for _ in range(args.rounds):
            results["onnx"].append(run(_ONNX, str(home), label, QUERY))
            results["torch"].append(run(_TORCH, str(home), args.model, checkpoint, QUERY))
    onnx, torch_ = results["onnx"], results["torch"]
    assert not any(r["torch_imported"] for r in onnx), "the onnx path imported torch"
    print(f"{args.model}, {args.rounds} interleaved rounds, medians; one query {QUERY!r}")
    print(f"{'path':<8}{'imports s':>11}{'load s':>9}{'query s':>9}{'total s':>9}{'peak RSS MB':>13}")
    for name, rows in (("onnx", onnx), ("torch", torch_)):
        med = {k: statistics.median(r[k] for r in rows) for k in ("import_s", "load_s", "query_s", "total_s", "peak_rss_mb")}
        print(f"{name:<8}{med['import_s']:>11.2f}{med['load_s']:>9.2f}{med['query_s']:>9.3f}{med['total_s']:>9.2f}"
              f"{med['peak_rss_mb']:>13.0f}")
    ratio_t = statistics.median(r["total_s"] for r in torch_) / statistics.median(r["total_s"] for r in onnx)
    ratio_m = statistics.median(r["peak_rss_mb"] for r in torch_) / statistics.median(r["peak_rss_mb"] for r in onnx)
    print(f"torch / onnx: {ratio_t:.1f}x the time, {ratio_m:.1f}x the peak RSS")
    diff = max(abs(a - b) for a, b in zip(onnx[0]["head"], torch_[0]["head"]))  # type: ignore[arg-type]
    print(f"first 4 components agree to {diff:.1e}")
    print(f"reproduce: python benchmarks/cold_imports.py --model {args.model} --rounds {args.rounds}")


if __name__ == "__main__":
    main()
