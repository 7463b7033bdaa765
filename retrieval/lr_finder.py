"""`--lr auto`: a short learning-rate range test, and the rule that picks the rate from its loss curve.

The test (Smith, "Cyclical Learning Rates for Training Neural Networks", 2017, as
fastai's `lr_find` runs it) trains a copy of the model for `LR_TEST_STEPS` steps on
a slice of the training pairs while the rate grows exponentially from the bottom
to the top of the family's sweep; the model the caller holds is never touched, so
the base weights are what training then starts from. It runs on the new pairs
alone, without the rehearsal training adds (retrieval.batches): the rule reads
how fast the new domain is learnt.

The rule: smooth the losses (exponential moving average, β = 0.7, bias-corrected),
stop reading the curve where it has diverged (smoothed loss above 4x its minimum),
and take the rate where the smoothed loss has come down HALFWAY from where it
started (the mean loss over the sweep's first decade, below the family's range,
where the model barely moves) to its lowest point, interpolated in log rate;
then clamp it to the family's range. Why halfway: the loss falls along an
S-shaped curve in log rate, and the midpoint of an S is its steepest point, so
this reads Smith's "steepest descent" rate from two levels instead of from the
smallest difference of neighbouring points. On clipdex-tiny that smallest
difference jumped with batch noise (one batch a point): the same data gave
1.0e-4 with one seed and 2.3e-4 with another, and the rule leant low, below the
3e-4 that won the benchmark's grid on every domain once rehearsal kept the base
(benchmarks/finetune.py; the README has the table). Over the 12 range tests
of the three domains × two data seeds × two batch seeds, halfway gave
3.0e-4 … 6.0e-4, each pair of batch seeds within 15% of each other
(steepest fall: 1.0e-4 … 3.8e-4, a pair up to 2.3x apart). fastai's other rule, "the lowest
loss / 10", fails here: from a model that is confidently wrong about a new
domain, high rates drive the loss down to log(batch) by flattening the
temperature, the "lowest" point is that collapse (1e-1 for clipdex-tiny), and a
tenth of it is 1e-2.

Ranges per model family (`LR_RANGES`, by open_clip architecture):
- pretrained CLIPs (every architecture not listed): 1e-5 to 3e-5, the range of
  published end-to-end fine-tuning recipes with AdamW: WiSE-FT (Wortsman et al.,
  CVPR 2022) fine-tunes ViT-B/32 at 3e-5 with weight decay 0.1; FLYP (Goyal et al.,
  CVPR 2023, "Finetune like you pretrain") at 1e-5 with weight decay 0.1. Higher
  rates wreck what the pretrained model knew, lower ones barely move it.
- `clipdex-tiny` (trained from scratch here, on a world of 8 shape and texture
  words): 1e-4 to 1e-3. It was trained at 1e-3 (`retrieval/demo/train_tiny.py`),
  and fine-tuning it on new words worked at 5e-4 in an earlier benchmark; its
  range tests on the three generated domains give 3.0e-4 … 6.0e-4.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch

from indexer.models import Encoder
from retrieval.contrastive import pixels_to_input
from retrieval.pair_data import PairData
from retrieval.batches import epoch_order, pairs_by_image
from retrieval.trainer import TrainConfig, make_optimizer, optimizer_step, resolve_precision

LR_TEST_STEPS = 20  # five per decade over the sweep
LR_TEST_BATCH = 32  # pairs per step: the curve's shape, not its level, is what the rule reads
LR_TEST_IMAGES = 256  # the slice of the training pairs the test draws its batches from
SMOOTHING = 0.7
DIVERGED = 4.0


@dataclass(frozen=True)
class LrRange:
    low: float  # the rule's result is clamped to [low, high]
    high: float
    source: str  # where the range comes from

    @property
    def sweep(self) -> tuple[float, float]:
        """The rates the test runs through: a decade below the range to two above it."""
        return self.low / 10, self.high * 100


PRETRAINED = LrRange(1e-5, 3e-5, "WiSE-FT (3e-5) and FLYP (1e-5) fine-tune CLIP ViT-B/32 with AdamW, wd 0.1")
LR_RANGES: dict[str, LrRange] = {
    "clipdex-tiny": LrRange(1e-4, 1e-3, "trained from scratch at 1e-3; benchmarks/finetune.py's grid"),
}


@dataclass(frozen=True)
class LrSearch:
    """The range test's curve and the rate the rule picked from it."""

    lr: float  # the chosen rate, clamped
    rule_lr: float  # what the rule gave before clamping
    range: LrRange
    curve: tuple[tuple[float, float], ...]  # (rate, smoothed loss) per step, up to where it diverged
    seconds: float

    def summary(self) -> str:
        """One line for stderr and the card."""
        low, high = self.curve[0], min(self.curve, key=lambda p: p[1])
        clamp = "" if self.lr == self.rule_lr else f", clamped from {self.rule_lr:.1e}"
        return (
            f"learning rate {self.lr:.1e} (range test: loss {low[1]:.2f} at {low[0]:.0e}, lowest {high[1]:.2f} "
            f"at {high[0]:.1e}; rule: halfway down, within [{self.range.low:.0e}, {self.range.high:.0e}]{clamp})"
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "lr": self.lr,
            "rule_lr": self.rule_lr,
            "rule": "rate where the smoothed loss is halfway from its first decade's mean to its lowest, clamped to the family range",
            "range": [self.range.low, self.range.high],
            "range_source": self.range.source,
            "seconds": round(self.seconds, 1),
            "curve": [{"lr": float(f"{lr:.3g}"), "loss": round(loss, 4)} for lr, loss in self.curve],
        }


def range_for(arch: str) -> LrRange:
    return LR_RANGES.get(arch, PRETRAINED)


def pick_lr(rates: list[float], losses: list[float], family: LrRange) -> tuple[float, float, list[tuple[float, float]]]:
    """(chosen rate, unclamped rate, smoothed curve up to divergence) by the module's rule."""
    smoothed: list[float] = []
    avg = 0.0
    for i, loss in enumerate(losses):
        avg = SMOOTHING * avg + (1 - SMOOTHING) * loss
        value = avg / (1 - SMOOTHING ** (i + 1))
        if not math.isfinite(value) or (smoothed and value > DIVERGED * min(smoothed)):
            break
        smoothed.append(value)
    if not smoothed:
        return family.low, family.low, []
    first_decade = [loss for rate, loss in zip(rates, losses) if rate < rates[0] * 10] or losses[:1]
    start, lowest = float(np.mean(first_decade)), min(smoothed)
    rule = rates[0]  # the loss never fell below where it started: the smallest rate is the safest
    if lowest < start:
        half = (start + lowest) / 2
        i = next(i for i, loss in enumerate(smoothed) if loss <= half)
        if i > 0:  # interpolate log(rate) between the points either side of the crossing
            above, below = smoothed[i - 1], smoothed[i]
            t = (above - half) / (above - below) if above > below else 1.0
            rule = float(10 ** (math.log10(rates[i - 1]) + t * (math.log10(rates[i]) - math.log10(rates[i - 1]))))
        else:
            rule = rates[0]
    return min(max(rule, family.low), family.high), rule, list(zip(rates, smoothed))


def rates(family: LrRange, steps: int = LR_TEST_STEPS) -> list[float]:
    lo, hi = family.sweep
    return [lo * (hi / lo) ** (i / (steps - 1)) for i in range(steps)]


def find_lr(encoder: Encoder, data: PairData, config: TrainConfig, steps: int = LR_TEST_STEPS) -> LrSearch:
    """Run the range test on a copy of the encoder's model; the encoder's own weights are never changed."""
    import time

    started = time.perf_counter()
    family = range_for(encoder.arch)
    subset = data.subset(list(range(min(data.images, LR_TEST_IMAGES))))
    batch = min(LR_TEST_BATCH, config.batch_size, subset.images)
    sweep = rates(family, steps)
    losses: list[float] = []
    net = copy.deepcopy(encoder.model).float().to(encoder.device).train()
    optimizer = make_optimizer(net, config)
    tokens = encoder.tokenizer(list(subset.captions)).to(encoder.device)  # (P, L)
    pair_lists = pairs_by_image(subset)
    precision = resolve_precision(config.precision, encoder.device)
    per_epoch = max(1, subset.images // batch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        for i, lr in enumerate(sweep):
            order, pick = epoch_order(config.seed + 1000, i // per_epoch, pair_lists)
            images = order[(i % per_epoch) * batch : (i % per_epoch + 1) * batch]
            x = pixels_to_input(encoder, subset.pixels[images])  # (B, 3, H, W)
            losses.append(optimizer_step(net, optimizer, x, tokens[pick[images]], lr, config, precision))
            if not math.isfinite(losses[-1]) or losses[-1] > DIVERGED * 2 * min(losses):
                break
    del net, optimizer
    chosen, rule, curve = pick_lr(sweep[: len(losses)], losses, family)
    return LrSearch(chosen, rule, family, tuple(curve), time.perf_counter() - started)
