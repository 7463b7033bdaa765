"""Evaluate CPU inference back ends for the image encoder, in one run.

    .venv/bin/pip install onnx onnxruntime onnxscript   # evaluation only, not clipdex dependencies
    .venv/bin/python benchmarks/onnx_eval.py [--model ViT-B-32-256] [--checkpoint FILE]

Back ends: clipdex's own encoder (`encode_images`, uint8 in) at fp32 (the
baseline), bf16 (autocast under no_grad, image weights cast once) and int8
(torch dynamic quantisation of the Linear layers); ONNX Runtime fp32, and ONNX
Runtime with dynamic int8 quantisation (normalisation in numpy, timed too). For
each: images/s at batch 32 and the embedding cosine against fp32 (mean and
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

from indexer.encode import encode_images  # noqa: E402
from indexer.models import ModelSpec, load_encoder  # noqa: E402


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
    spec = ModelSpec.parse(args.model, args.checkpoint)
    encoders = {p: load_encoder(spec, "cpu", p) for p in ("fp32", "bf16", "int8")}
    enc = encoders["fp32"]
    size = enc.input_spec.height
    visual = _Visual(enc.model).eval()
    rng = np.random.default_rng(0)
    # Smooth random pictures at model size, as uint8 (what the indexer hands the encoder).
    small = torch.from_numpy(rng.random((args.batch, 3, 8, 8), dtype=np.float32))
    x = torch.nn.functional.interpolate(small, size=size, mode="bilinear").permute(0, 2, 3, 1)
    pixels = (x * 255).round().clamp(0, 255).to(torch.uint8).numpy()  # (B, S, S, 3)
    mean, std = np.array(enc.mean, dtype=np.float32), np.array(enc.std, dtype=np.float32)

    def normalised(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(((a / np.float32(255) - mean) / std).transpose(0, 3, 1, 2), dtype=np.float32)

    work = Path(tempfile.mkdtemp())
    onnx_path, int8_path = work / "visual.onnx", work / "visual-int8.onnx"
    torch.onnx.export(visual, (torch.from_numpy(normalised(pixels[:2])),), str(onnx_path), input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "b"}, "y": {0: "b"}}, dynamo=False)
    quantize_dynamic(str(onnx_path), str(int8_path), weight_type=QuantType.QInt8)
    sessions = {name: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for name, p in
                (("onnxruntime fp32", onnx_path), ("onnxruntime int8 (dynamic)", int8_path))}

    labels = {"fp32": "clipdex fp32 (baseline)", "bf16": "clipdex bf16 (autocast, no_grad)",
              "int8": "clipdex int8 (dynamic, nn.Linear)"}
    results = [(labels[p], *rate(lambda a, e=e: encode_images(e, a), pixels)) for p, e in encoders.items()]
    for name, sess in sessions.items():
        results.append((name, *rate(lambda a, s=sess: s.run(None, {"x": normalised(a)})[0], pixels)))
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
