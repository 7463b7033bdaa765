"""The training loop: batches of pairs → InfoNCE steps, validation, early stopping, checkpoints.

Everything random is drawn from generators seeded by (seed, epoch), so a run
resumed from its checkpoint takes the same batches, and ends with the same
weights, as a run that was never interrupted.

Rehearsal (retrieval.batches): given pairs of the base model's own domain, a
`rehearse` share of every batch is drawn from them and an anchor pulls their
embeddings towards the base's. Without it every rate that learnt a new domain
forgot the base world (1–52% of its R@1 kept). The defaults, measured at 3e-4
for 250 steps of 16 pairs (layouts / counting; new-domain R@1, base kept):
replay alone at share 0.25: 0.63 / 0.61, 62% / 64%; at 0.5: 0.61 / 0.48,
79% / 78%; share 0.25 with the anchor at weight 10: 0.69 / 0.48, 98% / 97%;
at weight 3: 0.79 / 0.45, 94% / 95%. Weight 10 keeps the most; `--keep-base`
(which mixes the new domain away, see retrieval.finetune) then rarely acts.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from retrieval.contrastive import MAX_LOGIT_SCALE, pixels_to_input, train_step
from indexer.errors import CheckpointError
from retrieval.evaluate import evaluate
from retrieval.finetune_errors import CannotResume, TrainingConfigError
from retrieval.lora import add_lora, merge_lora
from indexer.models import Encoder
from retrieval.batches import Anchor, Anchored, Batches
from retrieval.pair_data import PairData

PRECISIONS = ("auto", "fp32", "bf16")
_RESUME_FREE = ("epochs", "max_steps", "patience", "eval_every", "checkpoint_every", "wise_ft", "time_budget_s", "keep_base")
MIN_EVAL_STEPS = 10  # with eval_every 0: once per epoch, but never more often than this
PLAN_AFTER_STEPS = 5  # with a time budget, the schedule's length is planned from the pace of the first steps
WARMUP_SHARE = 0.1  # warmup never takes more than this share of the planned steps
STOPPED_BY = ("patience", "time budget", "step cap")
REHEARSE_SHARE = 0.25  # the default share of each batch that rehearses base-domain pairs (benchmarks/finetune.py)
ANCHOR_WEIGHT = 10.0  # weight of the rehearsed pairs' pull towards the base's own embeddings (see Anchor)


@dataclass(frozen=True)
class TrainConfig:
    """How to fine-tune: schedule, batch, what trains, when to stop."""

    epochs: int = 200  # a cap: validation (patience) and the time budget end runs before it
    max_steps: int | None = None  # stop after this many optimizer steps, whatever `epochs` says
    batch_size: int = 128  # pairs per step: every pair is a negative for every other
    accum_steps: int = 1  # micro-batches per step (memory), features cached so negatives are kept
    lr: float | None = None  # None: auto, a range test picks it (retrieval.lr_finder)
    weight_decay: float = 0.1
    warmup_steps: int = 20  # at most WARMUP_SHARE of the planned steps (see _lr)
    val_fraction: float = 0.1
    seed: int = 0
    lock_image: bool = False
    lock_text: bool = False
    lora_rank: int = 0  # 0: train the weights themselves
    lora_alpha: float = 16.0
    wise_ft: float | None = None  # θ = (1 − α)·θ_base + α·θ_tuned after training
    eval_every: int = 0  # steps between validation runs; 0: once per epoch (at least MIN_EVAL_STEPS apart)
    patience: int = 5  # validation runs without improvement before stopping; 0: never stop early
    time_budget_s: float | None = 600.0  # wall clock for training (the range test before it is not counted); None: no limit
    keep_base: float | None = 0.9  # mix in base weights (wise-ft α) until this share of base-domain R@1 is kept
    rehearse: float = REHEARSE_SHARE  # share of each batch drawn from base-domain pairs, when there are any; 0: off
    anchor: float = ANCHOR_WEIGHT  # rehearsed pairs also keep the base's embeddings (cosine distance × this); 0: off
    precision: str = "auto"  # auto: bf16 on CUDA, fp32 on CPU (where bf16 training measured slower)
    checkpoint_every: int = 50  # steps between resumable checkpoints

    def check(self) -> None:
        """Raise TrainingConfigError naming the option that is out of range."""
        problems = [  # (is it bad, the option, what its value must be)
            (self.epochs < 1, "epochs", "at least 1"),
            (self.max_steps is not None and self.max_steps < 1, "max_steps", "at least 1"),
            (self.batch_size < 2, "batch_size", "at least 2, as InfoNCE needs negatives"),
            (not 1 <= self.accum_steps <= self.batch_size, "accum_steps", "between 1 and {batch_size}"),
            (self.lr is not None and self.lr <= 0, "lr", "positive, or auto"),
            (self.weight_decay < 0, "weight_decay", "0 or more"),
            (not 0 < self.val_fraction < 1, "val_fraction", "between 0 and 1"),
            (self.lock_image and self.lock_text, "lock_image", "off with {lock_text}: together they leave nothing to train"),
            (self.lora_rank < 0, "lora_rank", "0 (off) or more"),
            (self.wise_ft is not None and not 0 <= self.wise_ft <= 1, "wise_ft", "between 0 and 1"),
            (self.time_budget_s is not None and self.time_budget_s <= 0, "time_budget_s", "positive"),
            (self.keep_base is not None and not 0 <= self.keep_base <= 1, "keep_base", "between 0 and 1"),
            (not 0 <= self.rehearse < 1, "rehearse", "0 (off) or more, below 1"),
            (self.anchor < 0, "anchor", "0 (off) or more"),
            (self.precision not in PRECISIONS, "precision", f"one of {', '.join(PRECISIONS)}"),
        ]
        for bad, name, rule in problems:
            if bad:
                raise TrainingConfigError(name, getattr(self, name), rule)


@dataclass(frozen=True)
class TrainProgress:
    step: int
    total_steps: int
    epoch: int
    loss: float
    pairs_per_s: float
    val_score: float | None = None  # set on steps that ran validation


ProgressFn = Callable[[TrainProgress], None]


@dataclass
class TrainOutcome:
    model: torch.nn.Module  # merged, fp32, eval mode; the best validated weights
    steps: int
    best_step: int
    stopped_early: bool
    pairs_per_s: float
    train_seconds: float
    history: list[tuple[int, float]] = field(default_factory=list)  # (step, validation score)
    stopped_by: str = "step cap"  # one of STOPPED_BY


ScoreFn = Callable[[torch.nn.Module], float]  # validation score of the model being trained; higher is better


@dataclass
class _State:
    step: int = 0
    best_score: float = -1.0
    best_step: int = 0
    bad_evals: int = 0
    pairs: int = 0
    seconds: float = 0.0
    history: list[tuple[int, float]] = field(default_factory=list)
    best_weights: dict[str, torch.Tensor] | None = None
    horizon: int = 0  # the steps the schedule runs over (0: not planned yet, the step cap is used)


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision != "auto":
        return precision
    return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"


def train(
    encoder: Encoder,
    data: PairData,
    val: PairData,
    config: TrainConfig,
    *,
    state_file: Path | None = None,
    resume: bool = False,
    progress: ProgressFn | None = None,
    model: torch.nn.Module | None = None,
    deadline: float | None = None,
    score_fn: ScoreFn | None = None,
    rehearsal: PairData | None = None,
) -> TrainOutcome:
    """Train a copy of the encoder's model (or `model`) on `data`, validating on `val`.

    With `state_file`, a checkpoint is written there every `checkpoint_every` steps
    and removed at the end; `resume` continues from it. The run stops after
    `patience` validations without improvement, at the step cap, or at the first
    step ending after `deadline` (time.monotonic(); default: `time_budget_s` from
    now), and returns the best validated weights. `score_fn` replaces validation
    on `val` (tests use it to control the curve). With `rehearsal` (base-domain
    pairs) and `config.rehearse` > 0, that share of every batch comes from them.
    `config.lr` must be a number (`--lr auto` is resolved by retrieval.finetune).
    Raises CheckpointError.
    """
    config.check()
    if config.lr is None:
        raise TrainingConfigError("lr", "auto", "a number here: retrieval.lr_finder.find_lr picks one")
    if deadline is None and config.time_budget_s is not None:
        deadline = time.monotonic() + config.time_budget_s
    # Subnormal floats appear in gradients as training converges and slow CPU kernels several-fold.
    torch.set_flush_denormal(True)
    try:
        score = score_fn or (lambda net: evaluate(encoder, val, model=net).score)
        batches = Batches(data, rehearsal if config.rehearse > 0 else None, config.batch_size, config.rehearse, config.seed)
        return _train(encoder, batches, val, config, state_file, resume, progress, model, deadline, score)
    finally:
        torch.set_flush_denormal(False)


def _train(
    encoder: Encoder,
    batches: Batches,
    val: PairData,
    config: TrainConfig,
    state_file: Path | None,
    resume: bool,
    progress: ProgressFn | None,
    model: torch.nn.Module | None,
    deadline: float | None,
    score_fn: ScoreFn,
) -> TrainOutcome:
    net = copy.deepcopy(model if model is not None else encoder.model).float().to(encoder.device).train()
    optimizer = make_optimizer(net, config)
    per_epoch = batches.per_epoch
    total = config.epochs * per_epoch if config.max_steps is None else min(config.max_steps, config.epochs * per_epoch)
    eval_every = config.eval_every or max(per_epoch, MIN_EVAL_STEPS)
    tokens = batches.tokens(encoder)
    anchor = Anchor.of_base(encoder, batches, config.anchor) if batches.n_old and config.anchor > 0 else None
    precision = resolve_precision(config.precision, encoder.device)
    state = _State()
    if resume and state_file is not None:
        state = _load_state(state_file, net, optimizer, config, batches, val)
    stopped_by = "step cap"
    began, began_step = time.monotonic(), state.step
    while state.step < (state.horizon or total) and stopped_by == "step cap":
        epoch = state.step // per_epoch
        pixels, pairs = batches.at(state.step)
        started = time.perf_counter()
        x = pixels_to_input(encoder, pixels)  # (B, 3, H, W)
        rate = _lr(config, state.step, state.horizon or total)
        loss = optimizer_step(net, optimizer, x, tokens[pairs], rate, config, precision,
                              anchor.at(x, tokens, pairs) if anchor is not None else None)  # fmt: skip
        state.seconds += time.perf_counter() - started
        state.pairs += len(pairs)
        state.step += 1
        if not state.horizon and state.step - began_step >= PLAN_AFTER_STEPS:
            state.horizon = plan_steps(total, state.step, state.step - began_step, time.monotonic() - began, deadline)
        score = None
        end = state.horizon or total  # a horizon short of the cap was planned from the time budget
        out_of_time = (deadline is not None and time.monotonic() >= deadline) or state.step == end < total
        if state.step % eval_every == 0 or state.step == end or out_of_time:
            score = _validate(score_fn, net, state)
            if config.patience > 0 and state.bad_evals >= config.patience:
                stopped_by = "patience"
        if out_of_time and stopped_by == "step cap" and state.step < total:
            stopped_by = "time budget"
        if progress is not None:
            progress(TrainProgress(state.step, total, epoch, loss, state.pairs / max(state.seconds, 1e-9), score))
        if state_file is not None and state.step % config.checkpoint_every == 0 and state.step < total:
            _save_state(state_file, net, optimizer, config, batches, val, state)
    if state.best_weights is not None:
        net.load_state_dict(state.best_weights)
    merge_lora(net)
    if state_file is not None and state_file.exists():
        state_file.unlink()
    return TrainOutcome(
        net.eval(), state.step, state.best_step, stopped_by == "patience", state.pairs / max(state.seconds, 1e-9),
        state.seconds, state.history, stopped_by,
    )  # fmt: skip


def optimizer_step(
    net: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, tokens: torch.Tensor,
    lr: float, config: TrainConfig, precision: str, anchored: Anchored | None = None,
) -> float:  # fmt: skip
    """One optimizer step on a batch at rate `lr` (plus the anchor's pull on rehearsed pairs); return its loss."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss = train_step(net, x, tokens, config.accum_steps, precision, config.lock_image, config.lock_text)
    if anchored is not None:
        loss += anchored.backward(net, precision, config.lock_image, config.lock_text)
    optimizer.step()
    with torch.no_grad():
        net.logit_scale.clamp_(0, MAX_LOGIT_SCALE)  # type: ignore[operator]
    return loss


def _validate(score_fn: ScoreFn, net: torch.nn.Module, state: _State) -> float:
    score = float(score_fn(net))
    state.history.append((state.step, score))
    if score > state.best_score:
        state.best_score, state.best_step, state.bad_evals = score, state.step, 0
        state.best_weights = {k: v.detach().clone() for k, v in net.state_dict().items()}
    else:
        state.bad_evals += 1
    return score


def make_optimizer(net: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over what `config` lets train (LoRA adapters are added to `net` here)."""
    return _optimizer(net, _trainable(net, config), config)


def _trainable(net: torch.nn.Module, config: TrainConfig) -> list[torch.nn.Parameter]:
    if config.lora_rank > 0:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            adapters = add_lora(net, config.lora_rank, config.lora_alpha, image=not config.lock_image, text=not config.lock_text)
        scale: torch.nn.Parameter = net.logit_scale  # type: ignore[assignment]
        scale.requires_grad_(True)
        return adapters + [scale]
    for name, p in net.named_parameters():
        is_image = name.startswith("visual.")
        locked = (is_image and config.lock_image) or (not is_image and name != "logit_scale" and config.lock_text)
        p.requires_grad_(not locked)
    return [p for p in net.parameters() if p.requires_grad]


def _optimizer(net: torch.nn.Module, params: list[torch.nn.Parameter], config: TrainConfig) -> torch.optim.AdamW:
    """AdamW; as in open_clip, gains, biases and the temperature get no weight decay."""
    wanted = {id(p) for p in params}
    decay: list[torch.nn.Parameter] = []
    plain: list[torch.nn.Parameter] = []
    for name, p in net.named_parameters():
        if id(p) not in wanted:
            continue
        no_decay = p.ndim < 2 or "ln" in name or "bias" in name or "logit_scale" in name
        (plain if no_decay else decay).append(p)
    groups = [{"params": plain, "weight_decay": 0.0}, {"params": decay, "weight_decay": config.weight_decay}]
    # The fused kernel updates every tensor in one pass; the default on CPU loops tensor by tensor.
    return torch.optim.AdamW(groups, lr=config.lr or 0.0, betas=(0.9, 0.98), eps=1e-6, fused=True)


def plan_steps(total: int, step: int, steps_timed: int, seconds: float, deadline: float | None) -> int:
    """The steps the schedule runs over: the step cap, or fewer if the time budget ends first at this pace.

    Planned once, after PLAN_AFTER_STEPS steps, and kept in the checkpoint, so the
    schedule of a run depends on its step count only and a resumed run matches.
    Without it a run cut short by the budget would end inside the warmup or near
    the peak rate, as the cosine would be spread over steps it never takes.
    """
    if deadline is None or steps_timed <= 0:
        return total
    left_s = max(deadline - time.monotonic(), 0.0)
    return max(step + 1, min(total, step + int(left_s * steps_timed / max(seconds, 1e-9))))


def _lr(config: TrainConfig, step: int, total: int) -> float:
    """Linear warmup (at most WARMUP_SHARE of `total`), then cosine decay to zero at `total` steps."""
    peak = config.lr or 0.0
    warmup = min(config.warmup_steps, max(int(total * WARMUP_SHARE), 1), max(total - 1, 0))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * peak * (1 + math.cos(math.pi * progress))


# -- checkpoints -----------------------------------------------------------------------------


def _fingerprint(config: TrainConfig, batches: Batches, val: PairData) -> str:
    settings = {k: v for k, v in asdict(config).items() if k not in _RESUME_FREE}
    return json.dumps({"config": settings, "train": batches.digest(), "val": val.digest()}, sort_keys=True)


def _save_state(
    path: Path, net: torch.nn.Module, opt: torch.optim.Optimizer, config: TrainConfig, batches: Batches, val: PairData,
    state: _State,
) -> None:
    blob: dict[str, Any] = {
        "run": _fingerprint(config, batches, val),
        "model": net.state_dict(),
        "optimizer": opt.state_dict(),
        "best_weights": state.best_weights or {},
        "counters": [state.step, state.best_step, state.bad_evals, state.pairs, state.horizon],
        "scores": [state.best_score, state.seconds],
        "history": [list(h) for h in state.history],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)


def _load_state(
    path: Path, net: torch.nn.Module, opt: torch.optim.Optimizer, config: TrainConfig, batches: Batches, val: PairData
) -> _State:
    if not path.exists():
        raise CannotResume(str(path), is_missing=True)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a damaged file
        raise CheckpointError(f"checkpoint {path} cannot be read: {str(e).splitlines()[0]}") from None
    if blob.get("run") != _fingerprint(config, batches, val):
        raise CannotResume(str(path), is_missing=False)
    net.load_state_dict(blob["model"])
    opt.load_state_dict(blob["optimizer"])
    step, best_step, bad, pairs, horizon = (int(x) for x in [*blob["counters"], 0][:5])
    best_score, seconds = (float(x) for x in blob["scores"])
    history = [(int(s), float(v)) for s, v in blob["history"]]
    return _State(step, best_score, best_step, bad, pairs, seconds, history, blob["best_weights"] or None, horizon)
