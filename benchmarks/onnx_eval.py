"""Evaluate CPU inference back ends for the image encoder, in one run.

    .venv/bin/pip install onnx onnxruntime onnxscript   # evaluation only, not clipdex dependencies
    .venv/bin/python benchmarks/onnx_eval.py [--model ViT-B-32-256] [--checkpoint FILE]

Back ends: torch fp32 eager (the baseline), torch bf16 autocast under no_grad,
torch dynamic int8 quantisation of the Linear layers,
ONNX Runtime fp32, and ONNX Runtime with dynamic int8 quantisation. For each:
images/s at batch 32 and the embedding cosine against torch fp32 (mean and
minimum). With random weights the cosine says little; pass `--model clipdex-tiny`
(trained weights ship with the package) for a meaningful fidelity figure.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from retrieval.models import ModelSpec, load_encoder  # noqa: E402


class _Visual(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(self.model.encode_image(x), dim=-1)  # type: ignore[operator]


def rate(fn: object, x: np.ndarray, repeats: int = 3) -> tuple[float, np.ndarray]:
    out = fn(x[:4])  # type: ignore[operator]
    t0 = time.perf_counter()
    for _ in range(repeats):
        out = fn(x)  # type: ignore[operator]
    return repeats * len(x) / (time.perf_counter() - t0), np.asarray(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="ViT-B-32-256")
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if args.checkpoint is None and args.model != "clipdex-tiny":
        import open_clip
        from safetensors.torch import save_file

        args.checkpoint = Path(tempfile.gettempdir()) / "clipdex-bench" / f"{args.model}-random.safetensors"
        if not args.checkpoint.exists():
            args.checkpoint.parent.mkdir(parents=True, exist_ok=True)
            m = open_clip.create_model(args.model, pretrained=None)
            save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(args.checkpoint))
    enc = load_encoder(ModelSpec.parse(args.model, args.checkpoint), "cpu", "fp32")
    size = enc.input_spec.height
    visual = _Visual(enc.model).eval()
    rng = np.random.default_rng(0)
    # Smooth random pictures, normalised as the encoder would.
    x = torch.nn.functional.interpolate(torch.from_numpy(rng.random((args.batch, 3, 8, 8), dtype=np.float32)), size=size, mode="bilinear")
    mean, std = torch.tensor(enc.mean).view(1, 3, 1, 1), torch.tensor(enc.std).view(1, 3, 1, 1)
    x_np = ((x - mean) / std).numpy()

    def torch_fp32(a: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return visual(torch.from_numpy(a)).numpy()

    def torch_bf16(a: np.ndarray) -> np.ndarray:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return visual(torch.from_numpy(a)).float().numpy()

    quantized = torch.ao.quantization.quantize_dynamic(_Visual(enc.model).eval(), {torch.nn.Linear}, dtype=torch.qint8)

    def torch_int8(a: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return quantized(torch.from_numpy(a)).numpy()  # type: ignore[no-any-return]

    work = Path(tempfile.mkdtemp())
    onnx_path, int8_path = work / "visual.onnx", work / "visual-int8.onnx"
    torch.onnx.export(visual, (torch.from_numpy(x_np[:2]),), str(onnx_path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "b"}, "y": {0: "b"}}, dynamo=False)
    quantize_dynamic(str(onnx_path), str(int8_path), weight_type=QuantType.QInt8)
    sessions = {name: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for name, p in
                (("onnxruntime fp32", onnx_path), ("onnxruntime int8 (dynamic)", int8_path))}

    results = [("torch fp32 eager (baseline)", *rate(torch_fp32, x_np)), ("torch bf16 autocast, no_grad", *rate(torch_bf16, x_np)),
               ("torch int8 dynamic (nn.Linear)", *rate(torch_int8, x_np))]
    for name, sess in sessions.items():
        results.append((name, *rate(lambda a, s=sess: s.run(None, {"x": a})[0], x_np)))
    base_rate, base_out = results[0][1], results[0][2]
    print(f"\nonnx_eval: {args.model} image encoder, batch {args.batch}, "
          f"{'trained' if args.model == 'clipdex-tiny' else 'random'} weights")
    print(f"{'back end':32} {'img/s':>8} {'vs fp32':>8} {'cos mean':>9} {'cos min':>8}")
    for name, r, out in results:
        cos = np.sum(out * base_out, axis=1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(base_out, axis=1))
        print(f"{name:32} {r:8.1f} {r / base_rate:7.2f}x {cos.mean():9.4f} {cos.min():8.4f}")
    print("reproduce: .venv/bin/python benchmarks/onnx_eval.py")


if __name__ == "__main__":
    main()
