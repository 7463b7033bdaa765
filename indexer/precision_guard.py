"""Which precision images are encoded at, and the fidelity guard that must accept it first.

`auto_cpu_precision()` picks per CPU, from its /proc/cpuinfo flags: bf16 autocast where
the CPU computes bf16 natively, else int8 by ONNX Runtime (`indexer.quantised_export`: a
quantised copy of the image tower; the model's own weights stay fp32), else fp32.
benchmarks/onnx_eval.py holds the measurements behind the order.

A reduced precision is measured before it is trusted: the first time a library indexes
with a model at bf16 or int8, the first GUARD_IMAGES images (all, if the run has fewer)
are encoded both at fp32 and at that precision. Those images keep their fp32 vectors.
The precision is accepted only if the cosine to fp32 is ≥ MEAN_COSINE on average and
≥ MIN_COSINE for every image; otherwise the model is encoded at fp32 from then on, with
one note. The verdict and its figures are recorded per model fingerprint and precision
in the catalog (`precision_checks`), so the check runs once per library and model.

What the thresholds mean: two encodings of one photo at cosine 0.995 differ by a vector
of norm 0.1 (|a-b|² = 2 - 2·cos), against ~0.6-1.0 between different photos (clipdex-tiny
on world scenes: mean cosine between different scenes is printed by
benchmarks/index_throughput.py). Published 8-bit CLIP results find retrieval and zero-shot
accuracy practically unchanged at 8 bits: Wortsman et al., "Stable and low-precision training
for large-scale vision-language models" (NeurIPS 2023: int8 matrix multiplies in CLIP
ViT-Huge, zero-shot ImageNet within 0.1 point of bf16), and the PTQ4CLIP study (8-bit
post-training quantisation "near loss-less" on ImageNet). Those results hold for good
quantisations; the thresholds are our conservative reading of them, chosen so that a
quantisation that moves vectors by more than that well-behaved amount is refused: mean
0.995 for the library as a whole, minimum 0.98 (|a-b| = 0.2) for the worst single photo,
where a rank among near-duplicates could change. They are measured on the user's own
photos because a quantised 150M-parameter CLIP can behave unlike the trained tiny
weights the tests have.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

import numpy as np

from indexer import failpoints
from indexer.items import PrecisionCheck

if TYPE_CHECKING:
    from indexer.models import Encoder

GUARD_IMAGES = 32
MEAN_COSINE = 0.995
MIN_COSINE = 0.98
REDUCED = ("bf16", "int8")  # the CPU precisions the guard checks (fp16 on CUDA is not checked)

EncodeFn = Callable[[np.ndarray], np.ndarray]  # (B, H, W, 3) uint8 → (B, D) unit float32
NoteFn = Callable[[str], None]


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_native_bf16() -> bool:
    """AVX-512-BF16 or AMX: without them torch emulates bf16, slower than fp32 (benchmarks/onnx_eval.py --avx2: 0.24x)."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def auto_cpu_precision(flags: set[str] | None = None, env: dict[str, str] | None = None) -> str:
    """The CPU precision `auto` means here, from the CPU's flags (and any cap on torch's kernels). Torch-free.

    bf16 where torch computes bf16 natively (AVX-512-BF16 or AMX, and no ATEN_CPU_CAPABILITY /
    ONEDNN_MAX_CPU_ISA cap below them): there benchmarks/onnx_eval.py measured bf16 level with
    ONNX Runtime int8 on a quiet machine (2.53x and 2.58x fp32), and bf16 needs no export and
    stays closer to fp32. Elsewhere int8 by ONNX Runtime, measured 5.45x torch fp32 with torch
    capped at AVX2 (where bf16 is emulated: 0.24x). Without onnxruntime: fp32.
    """
    import importlib.util

    have = cpu_flags() if flags is None else flags
    if ("avx512_bf16" in have or "amx_bf16" in have) and not _torch_isa_capped(os.environ if env is None else env):
        return "bf16"
    if importlib.util.find_spec("onnxruntime") is not None:
        return "int8"
    return "fp32"


def _torch_isa_capped(env: Mapping[str, str]) -> bool:
    """True when torch or oneDNN is told to use kernels without native bf16 (as benchmarks do with --avx2)."""
    aten = env.get("ATEN_CPU_CAPABILITY", "").lower()
    onednn = env.get("ONEDNN_MAX_CPU_ISA", "").upper()
    return aten in ("default", "avx2", "zvector") or (onednn not in ("", "ALL") and "BF16" not in onednn and "AMX" not in onednn)


def precision_in_use(requested: str, device: str, fingerprint: str, checks: list[PrecisionCheck]) -> str:
    """What a CPU index run would encode this model's images at now: the choice, unless the guard refused it."""
    chosen = requested
    if requested == "auto":
        chosen = "fp16" if device.startswith("cuda") else auto_cpu_precision()
    refused = any(c.fingerprint == fingerprint and c.precision == chosen and not c.accepted for c in checks)
    return "fp32" if refused else chosen


def check_fields(check: PrecisionCheck) -> dict[str, object]:
    """A verdict as `status --json` shows it."""
    return {
        "precision": check.precision, "accepted": check.accepted, "mean_cosine": round(check.mean_cosine, 6),
        "min_cosine": round(check.min_cosine, 6), "images": check.images, "seconds": round(check.seconds, 3),
        "reason": check.reason,
    }


class ImageEncoding:
    """For one library and run: the function each encoder's images are encoded with, guarded.

    `known` are the verdicts the catalog holds; `finish()` returns the verdicts reached
    in this run (deciding on fewer than GUARD_IMAGES images when the run had no more),
    for the caller to record.
    """

    def __init__(self, home: Path, known: list[PrecisionCheck], notify: NoteFn, *, use_exports: bool = True) -> None:
        self.home = home
        self.known = {(c.fingerprint, c.precision): c for c in known}
        self.notify = notify
        self.use_exports = use_exports
        self._guards: dict[str, _Guarded] = {}

    def __call__(self, encoder: Encoder) -> EncodeFn:
        if encoder.precision not in REDUCED:
            from indexer.encode import encode_images

            return lambda pixels: encode_images(encoder, pixels)
        guard = self._guards.get(encoder.fingerprint)
        if guard is None or guard.encoder is not encoder:
            guard = _Guarded(encoder, self, self.known.get((encoder.fingerprint, encoder.precision)))
            self._guards[encoder.fingerprint] = guard
        return guard.encode

    def finish(self) -> list[PrecisionCheck]:
        """The verdicts reached in this run."""
        out = []
        for guard in self._guards.values():
            guard.decide()
            if guard.new_check is not None:
                out.append(guard.new_check)
        return out


class _Guarded:
    """One encoder's images: fp32 and the fast path side by side until decided, then one of them."""

    def __init__(self, encoder: Encoder, owner: ImageEncoding, check: PrecisionCheck | None) -> None:
        from indexer.encode import encode_images

        self.encoder = encoder
        self.owner = owner
        self.fp32_encoder = dataclasses.replace(encoder, precision="fp32", bf16_image_tower=None)
        self.fp32: EncodeFn = lambda pixels: encode_images(self.fp32_encoder, pixels)
        self.check = check
        self.new_check: PrecisionCheck | None = None
        self._fast: EncodeFn | None = None
        self._cosines: list[np.ndarray] = []
        self._seconds = 0.0

    def encode(self, pixels: np.ndarray) -> np.ndarray:
        if self.check is not None:
            return self._fast_path()(pixels) if self.check.accepted else self.fp32(pixels)
        t0 = time.perf_counter()
        reference = self.fp32(pixels)  # (B, D): these images keep their fp32 vectors
        fast = self._fast_path()
        if self.check is None:  # the fast path exists (making it may have refused it)
            got = fast(pixels)  # (B, D)
            self._cosines.append(np.sum(got.astype(np.float64) * reference, axis=1))
        self._seconds += time.perf_counter() - t0  # both encodes: the guard's one-time cost
        if sum(len(c) for c in self._cosines) >= GUARD_IMAGES:
            self.decide()
        return reference

    def decide(self) -> None:
        """Reach the verdict on the images seen so far (none seen: nothing to decide)."""
        if self.check is not None or not self._cosines:
            return
        cos = np.nan_to_num(np.concatenate(self._cosines), nan=-1.0)
        mean, low = float(cos.mean()), float(cos.min())
        ok = mean >= MEAN_COSINE and low >= MIN_COSINE
        reason = None if ok else f"cosine to fp32 mean {mean:.4f} (needs {MEAN_COSINE}), min {low:.4f} (needs {MIN_COSINE})"
        self._record(PrecisionCheck(self.encoder.fingerprint, self.encoder.precision, ok, mean, low, len(cos), self._seconds, reason))

    def _record(self, check: PrecisionCheck) -> None:
        self.check = self.new_check = check
        if not check.accepted:
            self.owner.notify(
                f"{self.encoder.spec.label}: {check.precision} image encoding refused on this library's first "
                f"{check.images} images ({check.reason}); encoding at fp32"
            )

    def _fast_path(self) -> EncodeFn:
        if self._fast is None:
            fast = self._make_fast()
            if failpoints.perturbs(failpoints.FAST_PATH_NOISE):
                fast = _with_noise(fast)
            self._fast = fast
        return self._fast

    def _make_fast(self) -> EncodeFn:
        from indexer.encode import encode_images

        enc = self.encoder
        if enc.precision == "bf16":
            return lambda pixels: encode_images(enc, pixels)
        if not self.owner.use_exports:  # exports turned off: no int8 file, fp32 without a verdict
            self.check = PrecisionCheck(enc.fingerprint, enc.precision, False, 0.0, 0.0, 0, 0.0, "exports are turned off")
            return self.fp32
        from indexer.derived import DerivedRejected
        from indexer.errors import DiskFull
        from indexer.quantised_export import image_encoder_int8, open_encoder

        try:
            session = open_encoder(image_encoder_int8(enc, self.owner.home))
        except DerivedRejected as e:  # cannot be made for this model: recorded, fp32 from now on
            self._record(PrecisionCheck(enc.fingerprint, enc.precision, False, 0.0, 0.0, 0, self._seconds, str(e)))
            return self.fp32
        except DiskFull as e:  # a full disk passes: fp32 for this run only, nothing recorded
            self.check = PrecisionCheck(enc.fingerprint, enc.precision, False, 0.0, 0.0, 0, self._seconds, str(e))
            self.owner.notify(f"{enc.spec.label}: {e}; encoding images at fp32 in this run")
            return self.fp32
        return session.encode  # (building it is timed by `encode`, as part of the guard's one-time cost)


def _with_noise(fast: EncodeFn) -> EncodeFn:
    """The fast path, perturbed (failpoint FAST_PATH_NOISE): seeded noise of norm ≈ 0.5 added, renormalised."""
    rng = np.random.default_rng(0)

    def noisy(pixels: np.ndarray) -> np.ndarray:
        v = fast(pixels)  # (B, D)
        v = v + rng.standard_normal(v.shape).astype(np.float32) * (0.5 / np.sqrt(v.shape[1]))
        return np.ascontiguousarray(v / np.linalg.norm(v, axis=1, keepdims=True), dtype=np.float32)

    return noisy
