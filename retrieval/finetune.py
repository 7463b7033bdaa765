"""Fine-tune a model on image–caption pairs, measure it before and after, and save it with its card.

    from retrieval import Library, ModelSpec
    from retrieval.finetune import finetune_pairs
    from retrieval.trainer import TrainConfig
    with Library.open() as lib:
        result = finetune_pairs(lib, "pairs.csv", TrainConfig(), base=ModelSpec.parse("clipdex-tiny"))
        lib.index(model=result.spec)   # encodes only what the new model has not embedded
        lib.use(result.spec)           # the default for search, once every item has a vector

With the defaults the learning rate comes from a range test (retrieval.lr_finder),
training stops when validation stops improving or the time budget is spent, and
when pairs of the base model's own domain are at hand, a share of every batch
rehearses them (`rehearse`, so the new domain is learnt without forgetting the
old) and, should the base still lose more than `keep_base` allows on other pairs
of its domain (`reference`), the base weights are mixed back in (wise-ft α).
"""

from __future__ import annotations

import copy
import os
import re
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

from retrieval.evaluate import RetrievalMetrics, evaluate
from indexer.model_store import named_path, write_model
from indexer.models import Encoder, ModelSpec, fingerprint_of
from retrieval.pair_data import PairData, load_pairs, split_by_image
from retrieval.pairs import Problem, read_pairs
from indexer.decode import InputSpec
from retrieval.lr_finder import LrSearch, find_lr
from retrieval.run_chart import run_chart
from retrieval.trainer import ProgressFn, TrainConfig, train

REFERENCE_SHARE = 0.3  # of --base-pairs' images, held out of rehearsal to measure what the base keeps
ALPHAS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)  # wise-ft α tried for keep_base, largest first
NoteFn = Callable[[str], None]
ReferenceFn = Callable[[str, InputSpec], "PairData | None"]  # (arch, input) → pairs of the base's own domain

if TYPE_CHECKING:
    from retrieval.library import Library


@dataclass
class FinetuneResult:
    weights: Path
    card: dict[str, Any]
    spec: ModelSpec  # loads the saved model
    before: RetrievalMetrics  # base model on the held-out pairs
    after: RetrievalMetrics  # saved model on the held-out pairs
    problems: list[Problem] = field(default_factory=list)  # skipped rows and images
    chart: Path | None = None  # the SVG of the range test and the validation curve


def wise_ft(base: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """θ = (1 − α)·θ_base + α·θ_tuned for every floating-point tensor (others are taken from tuned)."""
    out = {}
    for key, t in tuned.items():
        b = base[key].to(t.device, t.dtype)
        out[key] = torch.lerp(b, t, alpha) if t.is_floating_point() else t
    return out


def finetune(
    encoder: Encoder,
    train_data: PairData,
    val_data: PairData,
    config: TrainConfig,
    out: Path,
    *,
    source: str = "",
    progress: ProgressFn | None = None,
    resume: bool = False,
    reference: PairData | None = None,
    note: NoteFn | None = None,
    rehearsal: PairData | None = None,
) -> FinetuneResult:
    """Pick the rate (if auto), train, mix in the base (wise-ft or keep_base), evaluate base and result, save to `out`.

    `reference`: pairs of the base model's own domain, to measure what it keeps.
    `rehearsal`: other pairs of that domain, a `config.rehearse` share of every batch.
    """
    config.check()
    say = note or (lambda _: None)
    before = evaluate(encoder, val_data)
    search = None
    if config.lr is None:
        search = find_lr(encoder, train_data, config)
        say(search.summary())
        config = replace(config, lr=search.lr)
    rehearsed = rehearsal if config.rehearse > 0 else None
    if rehearsed is not None:
        say(f"rehearsing {rehearsed.pairs} pairs of the base's own domain: {config.rehearse:.0%} of every batch")
    deadline = time.monotonic() + config.time_budget_s if config.time_budget_s is not None else None  # training only
    outcome = train(
        encoder, train_data, val_data, config, state_file=resume_file(out), resume=resume, progress=progress,
        deadline=deadline, rehearsal=rehearsed,
    )  # fmt: skip
    say(f"stopped by {outcome.stopped_by} after {outcome.steps} steps; best validation at step {outcome.best_step}")
    tuned = outcome.model
    kept = None
    if config.wise_ft is not None:
        tuned.load_state_dict(wise_ft(encoder.model.state_dict(), tuned.state_dict(), config.wise_ft))
    elif config.keep_base is not None and reference is not None:
        kept = keep_base(encoder, tuned, reference, config.keep_base)
        tuned.load_state_dict(wise_ft(encoder.model.state_dict(), tuned.state_dict(), kept["alpha"]))
        say(f"wise-ft α {kept['alpha']}: keeps {kept['retention']:.0%} of the base's R@1 on its own domain")
    after = evaluate(encoder, val_data, model=tuned)
    arch = encoder.arch
    state = {k: v.float() for k, v in tuned.state_dict().items()}
    card = {
        "arch": arch,
        "fingerprint": fingerprint_of(arch, state),
        "base": {"model": encoder.spec.label, "fingerprint": encoder.fingerprint},
        "data": {
            "source": source,
            "digest": train_data.digest(),
            "val_digest": val_data.digest(),
            "train_images": train_data.images,
            "train_pairs": train_data.pairs,
            "val_images": val_data.images,
            "val_pairs": val_data.pairs,
        },
        "hyperparameters": asdict(config),
        "training": {
            "steps": outcome.steps,
            "best_step": outcome.best_step,
            "stopped_early": outcome.stopped_early,
            "pairs_per_s": round(outcome.pairs_per_s, 1),
            "train_seconds": round(outcome.train_seconds, 1),
            "stopped_by": outcome.stopped_by,
            "validation": [{"step": s, "score": round(v, 4)} for s, v in outcome.history],
        },
        "lr_search": search.to_dict() if search is not None else None,
        "rehearsal": None if rehearsed is None else {
            "share": config.rehearse, "anchor": config.anchor, "pairs": rehearsed.pairs, "images": rehearsed.images,
            "digest": rehearsed.digest(),
        },
        "keep_base": kept,
        "metrics": {"base": before.to_dict(), "tuned": after.to_dict()},
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_model(out, state, card)
    chart = out.with_suffix(".svg")
    chart.write_text(run_chart(card), encoding="utf-8")
    spec = ModelSpec(arch, None, str(out.resolve()))
    return FinetuneResult(out, card, spec, before, after, chart=chart)


def keep_base(encoder: Encoder, tuned: torch.nn.Module, reference: PairData, keep: float) -> dict[str, Any]:
    """The largest wise-ft α in ALPHAS keeping `keep` of the base's text→image R@1 on `reference` (else the smallest).

    Returns {"alpha", "retention", "base_r1", "curve": [{"alpha", "retention"}]} for the model card.
    """
    base_r1 = evaluate(encoder, reference).text_to_image.recall[0]
    base_state, tuned_state = encoder.model.state_dict(), tuned.state_dict()
    mixed = copy.deepcopy(tuned)
    curve: list[dict[str, float]] = []
    for alpha in ALPHAS:
        mixed.load_state_dict(wise_ft(base_state, tuned_state, alpha))
        r1 = evaluate(encoder, reference, model=mixed).text_to_image.recall[0]
        curve.append({"alpha": alpha, "retention": round(r1 / base_r1, 4) if base_r1 > 0 else 1.0})
        if curve[-1]["retention"] >= keep:
            break
    return {"alpha": curve[-1]["alpha"], "retention": curve[-1]["retention"], "base_r1": round(base_r1, 4),
            "pairs": reference.pairs, "curve": curve}  # fmt: skip


def resume_file(out: Path) -> Path:
    """The resumable checkpoint of a run saving to `out`."""
    return out.with_name(out.name.removesuffix(".safetensors") + ".resume.pt")


def finetune_pairs(
    lib: Library,
    pairs: str | os.PathLike[str],
    config: TrainConfig,
    *,
    base: ModelSpec | None = None,
    val_pairs: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    name: str | None = None,
    progress: ProgressFn | None = None,
    resume: bool = False,
    base_pairs: str | os.PathLike[str] | None = None,
    reference: ReferenceFn | None = None,
    note: NoteFn | None = None,
    rehearsal: ReferenceFn | None = None,
) -> FinetuneResult:
    """Fine-tune from a pairs file: `base` (default: the library's model), saved to `out` or as `name`.

    Pairs of the base's own domain come from `base_pairs` (split by image: a
    REFERENCE_SHARE measures what the base keeps, the rest is rehearsed), else
    from `reference(arch, input_spec)` and `rehearsal(arch, input_spec)`.

    Raises InputFileError, TrainingConfigError, SavedModelError, CheckpointError or a model error.
    """
    config.check()
    encoder = lib.encoder(base) if base is not None else lib.default_encoder()
    data, problems = load_pairs(read_pairs(pairs), encoder.input_spec)
    if val_pairs is not None:
        val, val_problems = load_pairs(read_pairs(val_pairs), encoder.input_spec)
        problems += val_problems
        train_data = data.without(set(val.keys))  # a held-out image never trains
    else:
        train_data, val = split_by_image(data, config.val_fraction, config.seed)
    target = Path(out).expanduser() if out is not None else named_path(lib.home, name or default_name(pairs))
    if target.suffix != ".safetensors":
        target = target.with_name(target.name + ".safetensors")
    measures = config.keep_base is not None and config.wise_ft is None  # only keep_base reads the reference
    own: PairData | None = None
    rehearse: PairData | None = None
    if base_pairs is not None:
        loaded, own_problems = load_pairs(read_pairs(base_pairs), encoder.input_spec)
        problems += own_problems
        own, rehearse = split_base_pairs(loaded, config, measures)
    else:
        if reference is not None and measures:
            own = reference(encoder.arch, encoder.input_spec)
        if rehearsal is not None and config.rehearse > 0:
            rehearse = rehearsal(encoder.arch, encoder.input_spec)
    result = finetune(encoder, train_data, val, config, target, source=str(pairs), progress=progress, resume=resume,
                      reference=own, note=note, rehearsal=rehearse)  # fmt: skip
    result.problems = problems
    return result


def split_base_pairs(own: PairData, config: TrainConfig, measures: bool) -> tuple[PairData | None, PairData | None]:
    """(reference, rehearsal) from one set of base-domain pairs: never rehearse the pairs retention is measured on."""
    if not measures:
        return None, own if config.rehearse > 0 else None
    if config.rehearse <= 0 or own.images < 2:
        return own, None
    rehearse, reference = split_by_image(own, REFERENCE_SHARE, config.seed)
    return reference, rehearse


def default_name(pairs: str | os.PathLike[str]) -> str:
    """`~/data/my pairs.csv` → `my-pairs-tuned`."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(pairs).stem).strip("-._") or "model"
    return f"{stem[:50]}-tuned"
