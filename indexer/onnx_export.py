"""ONNX exports of a loaded model's towers: the torch side of the derived text and image encoders.

The graph is `<kind>.onnx`, its weights `<kind>.onnx.data` beside it.

- Text: `token_ids` (B, L) int64 → `vectors` (B, D) float32, L2-normalised. The batch is
  dynamic. For open_clip's own text tower (causal attention, pooled at the end-of-text
  token, CLIP BPE ids padded with 0) the length is dynamic too (`info.trims_padding`):
  a caller cuts the padding after the longest text, as `encode_texts` does with torch
  (a 5-word query is ~8 tokens, not 77: ViT-B-32-256's text tower ran ~4x faster in
  ONNX Runtime). Its attention is written out in plain ops (`TrimmedTextTower`): the
  tracer bakes the length into `nn.MultiheadAttention`'s reshapes. Other text towers
  take the model's full context length. The tag's `info.tokenizer` is the recipe that
  gives the ids without torch (`indexer.tokenizer`); an `hf` tokenizer's file is saved beside it.
- Image: `pixels` (B, H, W, 3) uint8 → `vectors` (B, D) float32, L2-normalised. The input
  is what the decoder makes and `encode_images` takes; scaling by 1/255 and the model's
  mean/std happen inside the graph, so a caller passes decoded pixels as they are (a
  quarter of the bytes of float input, and no normalisation code to keep in step).

Each export is checked before it is kept: the ONNX Runtime output against the fp32
torch encoder on fixed captions and images (cosine ≥ MIN_COSINE for every one), and
the torch-free tokenizer's ids against open_clip's. A failure raises DerivedRejected,
recorded so that the caller falls back to torch without trying again.

The TorchScript exporter (`dynamo=False`) is used: for ViT-B-32-256's text tower it
took 6.2 s against 22.5 s for the torch.export one, for the same 254 MB file and speed,
and it needs `onnx` but not `onnxscript`.
"""

from __future__ import annotations

import copy
import math
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from indexer.derived import IMAGE_ENCODER, TEXT_ENCODER, Built, Derived, DerivedKind, DerivedRejected, get_or_build
from indexer.models import Encoder
from indexer.tokenizer import CLIP_BPE, RecipeFiles, TokenizerUnavailable, load_tokenizer, recipe_of

OPSET = 17
MIN_COSINE = 0.9999
VALIDATION_CAPTIONS = (
    "a photo of a cat",
    "A DOG RUNNING ON THE BEACH AT SUNSET",
    "two people hiking in the snowy mountains, wearing red jackets",
    "café in Paris — croissants & coffee ☕",
    "東京の夜景",
    "🐶🐱",
    "",
    "fish &amp; chips",
    "a " * 90 + "very long caption past the context length",
    "IMG_1234.JPG",
    "the year 2024",
    "birthday party with balloons and a chocolate cake",
)
VALIDATION_IMAGES = 6


def text_encoder(encoder: Encoder, home: Path) -> Derived:
    """The model's text tower as ONNX, from the library at `home` or exported now.

    Raises DerivedRejected (unsupported tokenizer, failed validation; recorded), DiskFull,
    or ValueError for an encoder whose weights are not fp32 (export from an fp32 or bf16 one).
    """
    model = _fp32_cpu_model(encoder)
    return get_or_build(
        home, encoder.fingerprint, TEXT_ENCODER, lambda d: _build_text(encoder, model, d), lambda d: _validate_text(encoder, model, d)
    )


def image_encoder(encoder: Encoder, home: Path) -> Derived:
    """The model's image tower as ONNX (uint8 pixels in); raises as `text_encoder`."""
    model = _fp32_cpu_model(encoder)
    return get_or_build(
        home, encoder.fingerprint, IMAGE_ENCODER, lambda d: _build_image(encoder, model, d), lambda d: _validate_image(encoder, model, d)
    )


class TextTower(torch.nn.Module):
    """Token ids → unit vectors."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.encode_text(token_ids), dim=-1)  # type: ignore[operator]  # (B, D)


class TrimmedTextTower(torch.nn.Module):
    """Token ids cut after the longest text → unit vectors: open_clip's `CLIP.encode_text` over
    the real length, as `indexer.encode` runs it with torch, in ops whose shapes follow the input."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        m: Any = self.model
        length = token_ids.shape[1]
        x = m.token_embedding(token_ids) + m.positional_embedding[:length]  # (B, L, W)
        mask = m.attn_mask[:length, :length]  # (L, L) causal, -inf above the diagonal
        for block in m.transformer.resblocks:
            x = x + block.ls_1(_attention(block.attn, block.ln_1(x), mask))
            x = x + block.ls_2(block.mlp(block.ln_2(x)))
        x = m.ln_final(x)
        x = x[torch.arange(x.shape[0]), token_ids.argmax(dim=-1)]  # (B, W) at end-of-text
        if isinstance(m.text_projection, torch.nn.Linear):
            x = m.text_projection(x)
        elif m.text_projection is not None:
            x = x @ m.text_projection
        return F.normalize(x, dim=-1)  # (B, D)


def _attention(mha: torch.nn.MultiheadAttention, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`nn.MultiheadAttention(x, x, x, attn_mask=mask)` (batch first, packed projections)."""
    batch, length, width = x.shape
    heads = mha.num_heads
    q, k, v = F.linear(x, mha.in_proj_weight, mha.in_proj_bias).chunk(3, dim=-1)  # (B, L, W) each
    q, k, v = (t.reshape(batch, length, heads, width // heads).transpose(1, 2) for t in (q, k, v))  # (B, H, L, W/H)
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(width // heads)) + mask  # (B, H, L, L)
    out = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(batch, length, width)  # (B, L, W)
    return mha.out_proj(out)


def trims_padding(encoder: Encoder) -> bool:
    """Whether the text tower can be exported with a dynamic length (`TrimmedTextTower`)."""
    from open_clip import CLIP
    from open_clip.transformer import ResidualAttentionBlock

    from indexer.encode import _can_trim

    model: Any = encoder.model
    if not (isinstance(model, CLIP) and _can_trim(model) and getattr(model.transformer, "batch_first", False)):
        return False
    try:
        if recipe_of(encoder.tokenizer).recipe.family != CLIP_BPE:
            return False  # padding is 0 and end-of-text the highest id only in CLIP BPE
    except TokenizerUnavailable:
        return False
    return all(
        type(b) is ResidualAttentionBlock
        and isinstance(b.attn, torch.nn.MultiheadAttention)
        and b.attn.batch_first
        and b.attn.in_proj_weight is not None
        and not hasattr(b, "ln_1_kv")
        for b in model.transformer.resblocks
    )


class ImageTower(torch.nn.Module):
    """uint8 (B, H, W, 3) pixels → unit vectors, normalised as `encode_images` does."""

    mean: torch.Tensor  # (1, 3, 1, 1)
    std: torch.Tensor  # (1, 3, 1, 1)

    def __init__(self, model: torch.nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.permute(0, 3, 1, 2).float() / 255.0  # (B, 3, H, W)
        x = (x - self.mean) / self.std
        return F.normalize(self.model.encode_image(x), dim=-1)  # type: ignore[operator]  # (B, D)


def _build_text(encoder: Encoder, model: torch.nn.Module, folder: Path) -> Built:
    made = _recipe(encoder)
    for name, content in made.files.items():
        (folder / f"{TEXT_ENCODER.name}.{name}").write_bytes(content)
    ids = torch.from_numpy(load_tokenizer(made.recipe, folder, TEXT_ENCODER.name + ".")(VALIDATION_CAPTIONS[:2]))
    trims = trims_padding(encoder)
    tower = TrimmedTextTower(model) if trims else TextTower(model)
    example = ids[:, : _real_length(ids.numpy())] if trims else ids
    _export(tower, example, "token_ids", folder / TEXT_ENCODER.filename, TEXT_ENCODER, encoder.fingerprint, dynamic_length=trims)
    info = {
        "tokenizer": made.recipe.to_json(), "dim": encoder.dim, "input": "token_ids", "output": "vectors",
        "trims_padding": trims,
    }
    return Built(_versions(), info)


def _build_image(encoder: Encoder, model: torch.nn.Module, folder: Path) -> Built:
    spec = encoder.input_spec
    pixels = torch.from_numpy(_validation_images(spec.height, spec.width)[:2])
    _export(ImageTower(model, encoder.mean, encoder.std), pixels, "pixels", folder / IMAGE_ENCODER.filename, IMAGE_ENCODER, encoder.fingerprint)
    info = {
        "dim": encoder.dim, "height": spec.height, "width": spec.width, "mean": list(encoder.mean), "std": list(encoder.std),
        "resize_mode": spec.resize_mode, "interpolation": spec.interpolation, "fill_color": spec.fill_color,
        "input": "pixels", "output": "vectors",
    }
    return Built(_versions(), info)


def _export(
    tower: torch.nn.Module, example: torch.Tensor, input_name: str, path: Path, kind: DerivedKind, fingerprint: str,
    dynamic_length: bool = False,
) -> None:
    axes = {0: "batch", 1: "length"} if dynamic_length else {0: "batch"}
    try:
        with warnings.catch_warnings():  # not under no_grad: MultiheadAttention would take its fused path, which has no ONNX form
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
            torch.onnx.export(
                tower.eval(), (example,), str(path), dynamo=False, opset_version=OPSET,
                input_names=[input_name], output_names=["vectors"],
                dynamic_axes={input_name: axes, "vectors": {0: "batch"}},
            )
    except (RuntimeError, TypeError, ValueError, NotImplementedError, torch.onnx.errors.OnnxExporterError) as e:
        lines = str(e).strip().splitlines()
        why = lines[0] if lines else type(e).__name__
        raise DerivedRejected(kind.name, fingerprint, f"the ONNX exporter failed ({why})") from None
    _move_weights_out(path)


def _move_weights_out(path: Path) -> None:
    """Keep the weights in `<file>.data` beside the graph: ONNX Runtime then maps them instead of
    parsing them out of the protobuf (ViT-B-32-256's text tower: session in 0.9 s, not 2.1 s;
    peak RSS 217 MB, not 400 MB). The graph names the data file relative to itself."""
    import onnx

    model = onnx.load(str(path))
    onnx.save_model(
        model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
        location=path.name + ".data", size_threshold=1024,
    )


def _validate_text(encoder: Encoder, model: torch.nn.Module, folder: Path) -> dict[str, float]:
    ours = load_tokenizer(_recipe(encoder).recipe, folder, TEXT_ENCODER.name + ".")(VALIDATION_CAPTIONS)  # (N, L)
    theirs = encoder.tokenizer(list(VALIDATION_CAPTIONS)).numpy()
    if not np.array_equal(ours, theirs):
        raise DerivedRejected(TEXT_ENCODER.name, encoder.fingerprint, "the torch-free tokenizer's ids differ from open_clip's")
    with torch.no_grad():
        expected = F.normalize(model.encode_text(torch.from_numpy(theirs)), dim=-1).numpy()  # type: ignore[operator]
    if not trims_padding(encoder):
        return _compare(encoder, TEXT_ENCODER, folder, "token_ids", ours, expected)
    # Each caption cut to its own length, then all of them cut to the longest, as `OnnxTextEncoder` cuts a batch.
    batches = [row[None, : _real_length(row[None])] for row in ours] + [ours[:, : _real_length(ours)]]
    return _compare(encoder, TEXT_ENCODER, folder, "token_ids", batches, np.concatenate([expected, expected]))


def _real_length(ids: np.ndarray) -> int:
    """The columns up to the longest text's end (CLIP BPE pads with 0; at least 1)."""
    return max(1, int((ids != 0).sum(axis=1).max(initial=0)))


def _validate_image(encoder: Encoder, model: torch.nn.Module, folder: Path) -> dict[str, float]:
    pixels = _validation_images(encoder.input_spec.height, encoder.input_spec.width)
    tower = ImageTower(model, encoder.mean, encoder.std).eval()
    with torch.no_grad():
        expected = tower(torch.from_numpy(pixels)).numpy()
    return _compare(encoder, IMAGE_ENCODER, folder, "pixels", pixels, expected)


def _compare(
    encoder: Encoder, kind: DerivedKind, folder: Path, input_name: str, x: np.ndarray | list[np.ndarray], expected: np.ndarray
) -> dict[str, float]:
    """ONNX Runtime's vectors for `x` (one batch, or several whose outputs stack) against `expected` (N, D)."""
    from indexer.onnx_encode import session_for  # the session searches use: what is checked is what runs

    session = session_for(folder / kind.filename)
    batches = x if isinstance(x, list) else [x]
    got = np.concatenate([session.run(["vectors"], {input_name: b})[0] for b in batches])  # (N, D)
    cosines = (got.astype(np.float64) * expected).sum(axis=1) / (
        np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1)
    )
    low = float(np.nan_to_num(cosines, nan=-1.0).min())
    if low < MIN_COSINE:
        raise DerivedRejected(kind.name, encoder.fingerprint, f"ONNX Runtime's vectors have cosine {low:.6f} < {MIN_COSINE} with torch's")
    return {"min_cosine": low, "mean_cosine": float(cosines.mean()), "samples": float(len(got))}


def _recipe(encoder: Encoder) -> RecipeFiles:
    try:
        return recipe_of(encoder.tokenizer)
    except TokenizerUnavailable as e:
        raise DerivedRejected(TEXT_ENCODER.name, encoder.fingerprint, str(e)) from None


def _validation_images(height: int, width: int) -> np.ndarray:
    """Fixed uint8 images: seeded noise, smooth gradients and flat colours, (N, H, W, 3)."""
    rng = np.random.default_rng(20260101)
    noise = rng.integers(0, 256, (VALIDATION_IMAGES // 2, height, width, 3), dtype=np.uint8)
    ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :, None] * np.ones((height, 1, 3), dtype=np.float32)
    smooth = [(ramp * (0.3 + 0.3 * i) + 40 * i) % 256 for i in range(VALIDATION_IMAGES - len(noise))]
    return np.concatenate([noise, np.stack(smooth).astype(np.uint8)])


def _fp32_cpu_model(encoder: Encoder) -> torch.nn.Module:
    model = encoder.model
    if encoder.precision not in ("fp32", "bf16", "int8") or any(p.dtype != torch.float32 for p in model.parameters()):
        raise ValueError(f"ONNX exports are made from fp32 weights; load the model with precision fp32, not {encoder.precision}")
    if encoder.device.type != "cpu":
        model = copy.deepcopy(model).cpu()
    return model.eval()


def _versions() -> dict[str, str]:
    import onnx

    return {"torch": torch.__version__.split("+")[0], "onnx": onnx.__version__, "opset": str(OPSET), "exporter": "torchscript"}
