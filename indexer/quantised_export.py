"""The int8 image and text encoders: quantised copies of the ONNX exports, and how to run them.

`image_encoder_int8(encoder, home)` returns the derived entry (`indexer.derived`), built
from the fp32 image export (`indexer.onnx_export.image_encoder`, made first if needed)
by ONNX Runtime's dynamic quantisation: weights int8 per tensor, activations quantised
per batch from their own range. It is a separate inference copy: the model's own
weights stay fp32 (training and the fingerprint use them). Its validation accepts it
when its vectors have cosine ≥ MIN_COSINE with the fp32 export's on fixed images; the
fidelity that matters, on the user's own photos, is measured by `indexer.precision_guard`.

Why dynamic and not static (QDQ, calibrated on the library's first images):
benchmarks/onnx_eval.py measured both (README "Performance"): static was not reliably
faster (6.50x vs 5.45x fp32 in one run, 5.17x vs 5.65x in the other), moved the vectors
much further from fp32 (cosine 0.98 against 0.9998), needs the images before the file
can be built, and its calibration took 56-98 s against 1.4-6.1 s. `calibrate_and_quantise`
stays for that benchmark.

`text_encoder_int8(source, home, fingerprint)` does the same for the text tower (query
texts), from the fp32 text export; it is kept only if the fidelity guard's thresholds
(`indexer.precision_guard`) hold on the fixed validation captions, since a search has no
fp32 vectors to fall back on per query. Its weights sit in `<file>.data` as the fp32
export's do, so a cold search maps them (the int8 transformer weights are ~1/4 of fp32's).

Sessions run with `session.intra_op.allow_spinning` = 0: a spinning intra-op thread
holds a core between batches that the decoder processes need.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from indexer.derived import IMAGE_ENCODER_INT8, TEXT_ENCODER_INT8, Built, Derived, DerivedRejected, get_or_build
from indexer.onnx_encode import OnnxImageEncoder, input_spec_of

if TYPE_CHECKING:
    from indexer.models import Encoder

MIN_COSINE = 0.95  # against fp32 on synthetic images: catches a broken file, not a subtle loss (the guard's job)


def image_encoder_int8(encoder: Encoder, home: Path) -> Derived:
    """The model's int8 image encoder from the library at `home`, or quantised now.

    Raises DerivedRejected (export or validation failed; recorded), DiskFull.
    """
    from indexer.onnx_export import image_encoder

    source = image_encoder(encoder, home)
    return get_or_build(
        home, encoder.fingerprint, IMAGE_ENCODER_INT8,
        lambda d: _build(source, d), lambda d: _validate(source, d, encoder.fingerprint),
    )


def open_encoder(derived: Derived, threads: int = 0) -> OnnxImageEncoder:
    """An ONNX Runtime session on an image encoder (fp32 or int8) that does not spin between batches."""
    import onnxruntime as ort

    info = derived.tag.info
    session = ort.InferenceSession(str(derived.path), session_options(threads), providers=["CPUExecutionProvider"])
    return OnnxImageEncoder(session, int(info["dim"]), input_spec_of(derived))


def session_options(threads: int = 0, level: str = "all") -> Any:
    """ONNX Runtime options for a batch encoder sharing the CPU with decoder processes."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads > 0:
        options.intra_op_num_threads = threads
    options.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def dynamic_quantise(source: Path, target: Path) -> None:
    """Dynamic int8 (weights QInt8, activations per batch) of an ONNX file."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_quantiser():
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)


@contextmanager
def _quiet_quantiser() -> Iterator[None]:
    """The quantiser logs advice on the root logger (pre-processing, bias layout); the library never prints."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def calibrate_and_quantise(source: Path, target: Path, pixels: np.ndarray, *, reduce_range: bool = False) -> None:
    """Static int8 in QDQ form (per-channel weights), activation ranges calibrated on `pixels` (N, H, W, 3) uint8."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"pixels": pixels[i : i + 8]} for i in range(0, len(pixels), 8)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    with _quiet_quantiser():
        quantize_static(
        str(source), str(target), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
        reduce_range=reduce_range, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        )


def _build(source: Derived, folder: Path) -> Built:
    import onnxruntime

    try:
        dynamic_quantise(source.path, folder / IMAGE_ENCODER_INT8.filename)
    except Exception as e:  # the quantiser raises what onnx and numpy raise
        lines = str(e).strip().splitlines()
        raise DerivedRejected(
            IMAGE_ENCODER_INT8.name, source.tag.fingerprint, f"ONNX Runtime's quantiser failed ({lines[0] if lines else type(e).__name__})"
        ) from None
    versions = {**source.tag.versions, "onnxruntime": onnxruntime.__version__, "quantisation": "dynamic int8"}
    return Built(versions, dict(source.tag.info))


def _validate(source: Derived, folder: Path, fingerprint: str) -> dict[str, float]:
    import onnxruntime as ort

    from indexer.onnx_export import _validation_images

    info = source.tag.info
    pixels = _validation_images(int(info["height"]), int(info["width"]))
    runs = [
        ort.InferenceSession(str(p), session_options(), providers=["CPUExecutionProvider"]).run(["vectors"], {"pixels": pixels})[0]
        for p in (source.path, folder / IMAGE_ENCODER_INT8.filename)
    ]
    expected, got = runs
    cosines = np.nan_to_num(np.sum(got.astype(np.float64) * expected, axis=1), nan=-1.0)  # both unit vectors
    low = float(cosines.min())
    if low < MIN_COSINE:
        raise DerivedRejected(IMAGE_ENCODER_INT8.name, fingerprint, f"the int8 encoder's vectors have cosine {low:.4f} < {MIN_COSINE} with fp32's")
    return {"min_cosine": low, "mean_cosine": float(cosines.mean()), "samples": float(len(pixels))}


# --- the int8 text tower: query texts for searches ----------------------------------------


def text_encoder_int8(source: Derived, home: Path, fingerprint: str) -> Derived:
    """The int8 copy of the fp32 text export `source` (`indexer.onnx_export.text_encoder`), or quantised now.

    Accepted at creation only when its vectors for the fixed validation captions (each
    cut to its own length, then all of them as one batch) have cosine ≥ the fidelity
    guard's MEAN_COSINE on average and ≥ its MIN_COSINE for every caption against the
    fp32 export's (`indexer.precision_guard`). It keeps the fp32 export's dynamic length
    (`info.trims_padding`) and tokenizer. Raises DerivedRejected (recorded), DiskFull.
    """
    return get_or_build(
        home, fingerprint, TEXT_ENCODER_INT8,
        lambda d: _build_text(source, d), lambda d: _validate_text(source, d, fingerprint),
    )


def _build_text(source: Derived, folder: Path) -> Built:
    import shutil

    import onnxruntime

    target = folder / TEXT_ENCODER_INT8.filename
    try:
        dynamic_quantise(source.path, target)
        _weights_beside(target)
    except Exception as e:  # the quantiser raises what onnx and numpy raise
        lines = str(e).strip().splitlines()
        raise DerivedRejected(
            TEXT_ENCODER_INT8.name, source.tag.fingerprint, f"ONNX Runtime's quantiser failed ({lines[0] if lines else type(e).__name__})"
        ) from None
    prefix = source.kind.name + "."
    for rec in source.tag.files:  # the tokenizer's files (an `hf` tokenizer.json), under this kind's name
        rest = rec.name.removeprefix(prefix)
        if rest not in ("onnx", "onnx.data"):
            shutil.copyfile(source.folder / rec.name, folder / f"{TEXT_ENCODER_INT8.name}.{rest}")
    versions = {**source.tag.versions, "onnxruntime": onnxruntime.__version__, "quantisation": "dynamic int8"}
    return Built(versions, dict(source.tag.info))


def _weights_beside(path: Path) -> None:
    """Weights in `<file>.data`, mapped by ONNX Runtime rather than parsed into memory, as the fp32 export keeps them."""
    import onnx

    model = onnx.load(str(path))
    onnx.save_model(
        model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
        location=path.name + ".data", size_threshold=1024,
    )


def validation_batches(source: Derived) -> list[np.ndarray]:
    """The validation captions' token ids as a search cuts them: each to its own length, then all
    to the longest (for a dynamic-length export), else one batch at the full context length."""
    from indexer.onnx_export import VALIDATION_CAPTIONS  # (torch: built on the torch path only)
    from indexer.tokenizer import TokenizerRecipe, load_tokenizer

    info = source.tag.info
    tokenize = load_tokenizer(TokenizerRecipe.from_json(info["tokenizer"]), source.folder, source.kind.name + ".")
    ids = tokenize(VALIDATION_CAPTIONS)  # (N, context_length)
    if not info.get("trims_padding"):
        return [ids]

    def cut(x: np.ndarray) -> np.ndarray:
        return x[:, : max(1, int((x != 0).sum(axis=1).max()))]  # CLIP BPE pads with 0

    return [cut(row[None]) for row in ids] + [cut(ids)]


def _validate_text(source: Derived, folder: Path, fingerprint: str) -> dict[str, float]:
    from indexer import precision_guard
    from indexer.onnx_encode import session_for  # the session searches use: what is checked is what runs

    batches = validation_batches(source)
    try:
        expected, got = (
            np.concatenate([session_for(p).run(["vectors"], {"token_ids": b})[0] for b in batches])  # (N, D)
            for p in (source.path, folder / TEXT_ENCODER_INT8.filename)
        )
    except Exception as e:  # ONNX Runtime refusing the quantised graph: a refusal, not a failed index run
        lines = str(e).strip().splitlines()
        raise DerivedRejected(
            TEXT_ENCODER_INT8.name, fingerprint, f"ONNX Runtime cannot run it ({lines[0] if lines else type(e).__name__})"
        ) from None
    cosines = np.nan_to_num(
        (got.astype(np.float64) * expected).sum(axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1)),
        nan=-1.0,
    )
    mean, low = float(cosines.mean()), float(cosines.min())
    if mean < precision_guard.MEAN_COSINE or low < precision_guard.MIN_COSINE:
        raise DerivedRejected(
            TEXT_ENCODER_INT8.name, fingerprint,
            f"the int8 text tower's vectors have cosine mean {mean:.4f} / min {low:.4f} with fp32's, "
            f"below {precision_guard.MEAN_COSINE} / {precision_guard.MIN_COSINE}",
        )
    return {"min_cosine": low, "mean_cosine": mean, "samples": float(len(got))}
