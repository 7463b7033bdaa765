"""Fine-tune a model on image–caption pairs, measure it before and after, and save it with its card.

    from retrieval import Library, ModelSpec
    from retrieval.finetune import finetune_pairs
    from retrieval.trainer import TrainConfig
    with Library.open() as lib:
        result = finetune_pairs(lib, "pairs.csv", TrainConfig(epochs=5), base=ModelSpec.parse("clipdex-tiny"))
        lib.index(model=result.spec)   # encodes only what the new model has not embedded
        lib.use(result.spec)           # the default for search, once every item has a vector
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from retrieval.evaluate import RetrievalMetrics, evaluate
from indexer.model_store import named_path, write_model
from indexer.models import Encoder, ModelSpec, fingerprint_of
from retrieval.pair_data import PairData, load_pairs, split_by_image
from retrieval.pairs import Problem, read_pairs
from retrieval.trainer import ProgressFn, TrainConfig, train

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
) -> FinetuneResult:
    """Train, optionally interpolate (wise-ft), evaluate base and result on `val_data`, save to `out`."""
    config.check()
    before = evaluate(encoder, val_data)
    outcome = train(
        encoder, train_data, val_data, config, state_file=resume_file(out), resume=resume, progress=progress
    )
    tuned = outcome.model
    if config.wise_ft is not None:
        base_state = encoder.model.state_dict()
        tuned.load_state_dict(wise_ft(base_state, tuned.state_dict(), config.wise_ft))
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
            "validation": [{"step": s, "score": round(v, 4)} for s, v in outcome.history],
        },
        "metrics": {"base": before.to_dict(), "tuned": after.to_dict()},
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_model(out, state, card)
    spec = ModelSpec(arch, None, str(out.resolve()))
    return FinetuneResult(out, card, spec, before, after)


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
) -> FinetuneResult:
    """Fine-tune from a pairs file: `base` (default: the library's model), saved to `out` or as `name`.

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
    result = finetune(encoder, train_data, val, config, target, source=str(pairs), progress=progress, resume=resume)
    result.problems = problems
    return result


def default_name(pairs: str | os.PathLike[str]) -> str:
    """`~/data/my pairs.csv` → `my-pairs-tuned`."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(pairs).stem).strip("-._") or "model"
    return f"{stem[:50]}-tuned"
