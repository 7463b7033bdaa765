"""Encode with a derived ONNX export and no torch: the search side of `indexer.onnx_export`.

`OnnxTextEncoder.open(derived)` reads the tokenizer recipe from the export's tag and
starts an ONNX Runtime session; `encode(texts)` returns what `encode_texts` returns
for the fp32 torch model (cosine ≥ 0.9999, checked when the export was made), or,
opened on the int8 copy (`indexer.quantised_export.text_encoder_int8`), vectors within
the fidelity guard's thresholds of those (checked when the copy was made).
Importing this module imports neither torch nor open_clip; onnxruntime is imported
when a session is opened.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from indexer.decode import InputSpec
from indexer.derived import IMAGE_ENCODER, TEXT_ENCODER, TEXT_ENCODER_INT8, Derived
from indexer.tokenizer import Tokenize, TokenizerRecipe, load_tokenizer


def _session(derived: Derived, threads: int) -> Any:
    return session_for(derived.path, threads)


def session_for(path: Path, threads: int = 0) -> Any:
    """An ONNX Runtime CPU session for a cold process (the export's validation uses it too).

    Measured for ViT-B-32-256's text tower on a 2-core machine: basic graph optimisation
    starts the session in 0.42 s instead of 1.17 s (the extended fusions buy nothing
    measurable for one query), and without weight prepacking the weights stay mapped
    from `<file>.data` (~20 MB of anonymous memory instead of a 156 MB copy). No arena:
    a search frees what it allocates, and an arena keeps its peak.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads > 0:
        options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.enable_cpu_mem_arena = False
    options.enable_mem_pattern = False
    options.add_session_config_entry("session.disable_prepacking", "1")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@dataclass
class OnnxTextEncoder:
    """Texts → (B, D) unit float32 vectors, from a derived text encoder."""

    session: Any
    tokenize: Tokenize
    dim: int
    trims_padding: bool = False  # the graph takes any length: cut the padding after the longest text

    @classmethod
    def open(cls, derived: Derived, threads: int = 0) -> OnnxTextEncoder:
        """`derived` is the fp32 text export or its int8 copy (`indexer.quantised_export`).

        Raises TokenizerUnavailable when the tokenizer's files are missing or changed.
        """
        if derived.kind.name not in (TEXT_ENCODER.name, TEXT_ENCODER_INT8.name):
            raise ValueError(f"{derived.path} is not a text encoder")
        recipe = TokenizerRecipe.from_json(derived.tag.info["tokenizer"])
        tokenize = load_tokenizer(recipe, derived.folder, derived.kind.name + ".")
        trims = bool(derived.tag.info.get("trims_padding", False))
        return cls(_session(derived, threads), tokenize, int(derived.tag.info["dim"]), trims)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        ids = self.tokenize(texts)  # (B, context_length)
        if self.trims_padding:  # CLIP BPE pads with 0 (see indexer.onnx_export)
            ids = ids[:, : max(1, int((ids != 0).sum(axis=1).max()))]  # (B, L)
        out = self.session.run(["vectors"], {"token_ids": ids})[0]  # (B, D)
        return np.ascontiguousarray(out, dtype=np.float32)


@dataclass
class OnnxImageEncoder:
    """(B, H, W, 3) uint8 model-sized pixels → (B, D) unit float32 vectors, from a derived image encoder.

    `input_spec` is how to decode a photo for it (`indexer.decode`), as the torch encoder's.
    """

    session: Any
    dim: int
    input_spec: InputSpec

    @classmethod
    def open(cls, derived: Derived, threads: int = 0) -> OnnxImageEncoder:
        """Raises ValueError for an export whose tag lacks the input's resize rules."""
        if derived.kind.name != IMAGE_ENCODER.name:
            raise ValueError(f"{derived.path} is not an image encoder")
        return cls(_session(derived, threads), int(derived.tag.info["dim"]), input_spec_of(derived))

    def encode(self, pixels: np.ndarray) -> np.ndarray:
        if len(pixels) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self.session.run(["vectors"], {"pixels": np.ascontiguousarray(pixels, dtype=np.uint8)})[0]  # (B, D)
        return np.ascontiguousarray(out, dtype=np.float32)


def input_spec_of(derived: Derived) -> InputSpec:
    """How to decode a photo for an exported image encoder (fp32 or its int8 copy), from its tag.

    Raises ValueError for a tag that lacks the resize rules (an export older than them).
    """
    info = derived.tag.info
    try:
        return InputSpec(
            int(info["height"]), int(info["width"]), str(info["resize_mode"]), str(info["interpolation"]),
            int(info["fill_color"]),
        )
    except KeyError as e:
        raise ValueError(f"{derived.path}'s tag does not say how to resize photos ({e})") from None
