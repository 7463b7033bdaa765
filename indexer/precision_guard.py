"""Which precision images are encoded at, and the fidelity guard that must accept it first.

`auto_cpu_candidates()` lists, per CPU from its /proc/cpuinfo flags, the reduced
precisions `auto` tries, fastest first: int8 by ONNX Runtime (`indexer.quantised_export`:
a quantised copy of the image tower; the model's own weights stay fp32) and bf16 autocast
where the CPU computes bf16 natively. The first one the guard accepts is used; fp32 when
every one is refused. benchmarks/index_throughput.py and benchmarks/onnx_eval.py hold the
measurements behind the order.

A reduced precision is measured before it is trusted: the first time a library indexes
with a model at bf16 or int8, the first GUARD_IMAGES images (all, if the run has fewer)
are encoded both at fp32 and at that precision. Those images keep their fp32 vectors.
The precision is accepted only if the cosine to fp32 is ≥ MEAN_COSINE on average and
≥ MIN_COSINE for every image; otherwise `auto` measures its next choice on the next
images, and the model is encoded at fp32 once every choice is refused, with one note
each. Each verdict and its figures are recorded per model fingerprint and precision
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


def auto_cpu_candidates(flags: set[str] | None = None, env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The reduced CPU precisions `auto` tries here, fastest first, each only once the guard accepts it;
    fp32 when every one is refused (or none applies). From the CPU's flags and any cap on torch's
    kernels. Torch-free.

    - AVX-512-BF16 without AMX (and torch not capped below it): int8 by ONNX Runtime, then bf16.
      On such a CPU (2-core AMD EPYC, AVX-512-VNNI) `benchmarks/index_throughput.py` measured the
      int8 image encoder at 46-53 ms of CPU per image against 72 ms for bf16 autocast, and the
      whole index run at 3.89x the naive pipeline against 3.17x at bf16; bf16 stays the fallback for a model whose int8 copy the
      guard refuses (a quantised pretrained ViT can move its vectors too far: see README).
    - AMX: bf16, then int8. Not measured here (no AMX CPU was at hand); AMX's bf16 tiles are the
      reason such CPUs exist, so bf16 goes first.
    - No native bf16 (torch emulates it: benchmarks/onnx_eval.py --avx2 measured 0.24x fp32):
      int8 by ONNX Runtime (5.45x torch fp32 in the same run).
    - No onnxruntime: bf16 where native, else nothing.
    """
    import importlib.util

    have = cpu_flags() if flags is None else flags
    native = ("avx512_bf16" in have or "amx_bf16" in have) and not _torch_isa_capped(os.environ if env is None else env)
    ort = importlib.util.find_spec("onnxruntime") is not None
    if native and "amx_bf16" in have:
        return ("bf16", "int8") if ort else ("bf16",)
    if native:
        return ("int8", "bf16") if ort else ("bf16",)
    return ("int8",) if ort else ()


def auto_cpu_precision(flags: set[str] | None = None, env: Mapping[str, str] | None = None) -> str:
    """The CPU precision `auto` tries first here (`auto_cpu_candidates`), fp32 where there is none."""
    return next(iter(auto_cpu_candidates(flags, env)), "fp32")


def _torch_isa_capped(env: Mapping[str, str]) -> bool:
    """True when torch or oneDNN is told to use kernels without native bf16 (as benchmarks do with --avx2)."""
    aten = env.get("ATEN_CPU_CAPABILITY", "").lower()
    onednn = env.get("ONEDNN_MAX_CPU_ISA", "").upper()
    return aten in ("default", "avx2", "zvector") or (onednn not in ("", "ALL") and "BF16" not in onednn and "AMX" not in onednn)


def precision_in_use(
    requested: str, device: str, fingerprint: str, checks: list[PrecisionCheck], *, use_exports: bool = True
) -> str:
    """What an index run would encode this model's images at now: the first choice the guard has not
    refused (int8 only where exports are on: it is an exported file)."""
    if requested == "auto" and device.startswith("cuda"):
        return "fp16"
    choices = auto_cpu_candidates() if requested == "auto" else (requested,)
    refused = {c.precision for c in checks if c.fingerprint == fingerprint and not c.accepted}
    if not use_exports:
        refused.add("int8")
    return next((p for p in choices if p not in refused), "fp32")


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
    for the caller to record. With `auto`, an encoder loaded at auto's first choice falls
    back along `auto_cpu_candidates()` when the guard refuses a precision (int8, then bf16,
    then fp32 on a CPU with native bf16); a precision asked for by name falls back to fp32.
    """

    def __init__(
        self, home: Path, known: list[PrecisionCheck], notify: NoteFn, *, use_exports: bool = True, auto: bool = False
    ) -> None:
        self.home = home
        self.known = {(c.fingerprint, c.precision): c for c in known}
        self.notify = notify
        self.use_exports = use_exports
        self.auto = auto
        self._guards: dict[str, _Guarded] = {}

    def __call__(self, encoder: Encoder) -> EncodeFn:
        if encoder.precision not in REDUCED:
            from indexer.encode import encode_images

            return lambda pixels: encode_images(encoder, pixels)
        guard = self._guards.get(encoder.fingerprint)
        if guard is None or guard.encoder is not encoder:
            guard = _Guarded(encoder, self, self._choices(encoder))
            self._guards[encoder.fingerprint] = guard
        return guard.encode

    def finish(self) -> list[PrecisionCheck]:
        """The verdicts reached in this run."""
        out = []
        for guard in self._guards.values():
            guard.decide()
            out.extend(guard.new_checks)
        return out

    def _choices(self, encoder: Encoder) -> tuple[str, ...]:
        """The precisions to try for this encoder, in order: auto's list from its first choice on, else its own."""
        if self.auto and encoder.device.type == "cpu":
            candidates = auto_cpu_candidates()
            if encoder.precision in candidates:
                return candidates[candidates.index(encoder.precision) :]
        return (encoder.precision,)


class _Unavailable(Exception):
    """A choice's encoder cannot be made: with a verdict to record (it never can, for this model), or none (this run)."""

    def __init__(self, check: PrecisionCheck | None = None, note: str | None = None) -> None:
        super().__init__(note)
        self.check, self.note = check, note


class _Guarded:
    """One encoder's images: fp32 and a fast path side by side until decided, then one of them.

    `choices` are tried in order: a precision the catalog already accepted is used at
    once, one it refused is skipped, an unmeasured one is guarded on the next images
    (those keep their fp32 vectors); when every one is refused, fp32.
    """

    def __init__(self, encoder: Encoder, owner: ImageEncoding, choices: tuple[str, ...]) -> None:
        from indexer.encode import encode_images

        self.encoder = encoder
        self.owner = owner
        self.fp32_encoder = dataclasses.replace(encoder, precision="fp32", bf16_image_tower=None)
        self.fp32: EncodeFn = lambda pixels: encode_images(self.fp32_encoder, pixels)
        self.choices = list(choices)
        self.new_checks: list[PrecisionCheck] = []
        self.use: EncodeFn | None = None  # once decided: the accepted fast path, or fp32
        self.guarding: str | None = None  # the precision being measured
        self._fast: EncodeFn | None = None
        self._cosines: list[np.ndarray] = []
        self._seconds = 0.0
        self._next()

    def encode(self, pixels: np.ndarray) -> np.ndarray:
        if self.use is not None:
            return self.use(pixels)
        t0 = time.perf_counter()
        reference = self.fp32(pixels)  # (B, D): these images keep their fp32 vectors
        while self.guarding is not None:  # the next choice, on the same images, where this one cannot be made
            try:
                got = self._fast_path()(pixels)  # (B, D)
                self._cosines.append(np.sum(got.astype(np.float64) * reference, axis=1))
                break
            except _Unavailable as e:
                self._unavailable(e)
        self._seconds += time.perf_counter() - t0  # both encodes: the guard's one-time cost
        if sum(len(c) for c in self._cosines) >= GUARD_IMAGES:
            self.decide()
        return reference

    def decide(self) -> None:
        """Reach the verdict on the images seen so far (none seen: nothing to decide)."""
        if self.guarding is None or not self._cosines:
            return
        cos = np.nan_to_num(np.concatenate(self._cosines), nan=-1.0)
        mean, low = float(cos.mean()), float(cos.min())
        ok = mean >= MEAN_COSINE and low >= MIN_COSINE
        reason = None if ok else f"cosine to fp32 mean {mean:.4f} (needs {MEAN_COSINE}), min {low:.4f} (needs {MIN_COSINE})"
        check = PrecisionCheck(self.encoder.fingerprint, self.guarding, ok, mean, low, len(cos), self._seconds, reason)
        self._remember(check)
        if ok:
            self.guarding, self.use = None, self._fast
        else:
            self._refused(check)

    def _next(self) -> None:
        """Go to the first choice not refused: use it if accepted, guard it if unmeasured; fp32 when none is left."""
        self.guarding, self._fast, self._cosines, self._seconds = None, None, [], 0.0
        while self.choices:
            known = self.owner.known.get((self.encoder.fingerprint, self.choices[0]))
            if known is None:
                self.guarding = self.choices[0]
                return
            if known.accepted:
                try:
                    self.use = self._fast_path()
                    return
                except _Unavailable as e:
                    if e.check is not None:
                        self._remember(e.check)
                    if e.note is not None:
                        self.owner.notify(e.note)
            self.choices.pop(0)
        self.use = self.fp32

    def _unavailable(self, e: _Unavailable) -> None:
        """The guarded choice cannot be made: recorded as refused where it never can be, else skipped in this run."""
        if e.note is not None:
            self.owner.notify(e.note)
        if e.check is not None:
            self._remember(e.check)
            self._refused(e.check)
        else:
            self.choices.pop(0)
            self._next()

    def _remember(self, check: PrecisionCheck) -> None:
        self.new_checks.append(check)
        self.owner.known[(check.fingerprint, check.precision)] = check

    def _refused(self, check: PrecisionCheck) -> None:
        self.choices.pop(0)
        then = f"measuring {self.choices[0]} next" if self.choices else "encoding at fp32"
        measured = f"on this library's first {check.images} images " if check.images else ""
        self.owner.notify(f"{self.encoder.spec.label}: {check.precision} image encoding refused {measured}({check.reason}); {then}")
        self._next()

    def _fast_path(self) -> EncodeFn:
        """The current choice's encoder, made once; raises _Unavailable where it cannot be made."""
        if self._fast is None:
            precision = self.choices[0]
            fast = self._make_fast(precision)
            if failpoints.perturbs(failpoints.FAST_PATH_NOISE) or (
                precision == "int8" and failpoints.perturbs(failpoints.INT8_PATH_NOISE)
            ):
                fast = _with_noise(fast)
            self._fast = fast
        return self._fast

    def _make_fast(self, precision: str) -> EncodeFn:
        from indexer.encode import encode_images

        enc = self.encoder
        if precision == "bf16":
            bf16 = enc if enc.precision == "bf16" else dataclasses.replace(enc, precision="bf16", bf16_image_tower=None)
            return lambda pixels: encode_images(bf16, pixels)
        if not self.owner.use_exports:  # exports turned off: no int8 file; the next choice, nothing recorded
            raise _Unavailable()
        from indexer.derived import DerivedRejected
        from indexer.errors import DiskFull
        from indexer.quantised_export import image_encoder_int8, open_encoder

        try:
            session = open_encoder(image_encoder_int8(enc, self.owner.home))
        except DerivedRejected as e:  # cannot be made for this model: recorded, the next choice from now on
            reason = str(e)
            raise _Unavailable(PrecisionCheck(enc.fingerprint, precision, False, 0.0, 0.0, 0, self._seconds, reason)) from e
        except DiskFull as e:  # a full disk passes: the next choice for this run only, nothing recorded
            raise _Unavailable(note=f"{enc.spec.label}: {e}; not encoding images at {precision} in this run") from e
        return session.encode  # (building it is timed by `encode`, as part of the guard's one-time cost)


def _with_noise(fast: EncodeFn) -> EncodeFn:
    """The fast path, perturbed (failpoint FAST_PATH_NOISE): seeded noise of norm ≈ 0.5 added, renormalised."""
    rng = np.random.default_rng(0)

    def noisy(pixels: np.ndarray) -> np.ndarray:
        v = fast(pixels)  # (B, D)
        v = v + rng.standard_normal(v.shape).astype(np.float32) * (0.5 / np.sqrt(v.shape[1]))
        return np.ascontiguousarray(v / np.linalg.norm(v, axis=1, keepdims=True), dtype=np.float32)

    return noisy
