"""Commands of the fine-tuning loop: finetune, eval, use."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cli.options import CheckpointOpt, DeviceOpt, JsonOpt, LibraryOpt, ModelOpt, model_spec, open_library
from cli.render import echo, note, print_json
from cli.train_render import train_progress

PairsArg = Annotated[Path, typer.Argument(help="CSV/TSV or JSONL with image and caption fields, or a folder of images with .txt captions.")]


def finetune(
    pairs: PairsArg,
    model: ModelOpt = None,
    checkpoint: CheckpointOpt = None,
    val: Annotated[Optional[Path], typer.Option("--val", help="Held-out pairs (instead of --val-fraction).")] = None,
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Share of images held out, chosen by image.")] = 0.1,
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Most passes over the training images (a cap: validation and --time-budget stop runs first).")] = 200,
    max_steps: Annotated[Optional[int], typer.Option("--max-steps", min=1, help="Stop after N optimizer steps.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Pairs per step (each is a negative for the others).")] = 128,
    accum_steps: Annotated[int, typer.Option("--accum-steps", help="Micro-batches per step, to fit memory; negatives are kept.")] = 1,
    lr: Annotated[str, typer.Option("--lr", help="Peak learning rate (AdamW, warmup then cosine), or auto: a range test picks it.")] = "auto",
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="AdamW weight decay.")] = 0.1,
    warmup_steps: Annotated[int, typer.Option("--warmup-steps", help="Steps of linear warmup (at most a tenth of the steps the run plans).")] = 20,
    lock_image: Annotated[bool, typer.Option("--lock-image", help="Freeze the image tower.")] = False,
    lock_text: Annotated[bool, typer.Option("--lock-text", help="Freeze the text tower.")] = False,
    lora_rank: Annotated[int, typer.Option("--lora-rank", help="Train LoRA adapters of this rank on attention (merged on save); 0: off.")] = 0,
    wise_ft: Annotated[Optional[float], typer.Option("--wise-ft", help="Keep (1-ALPHA) of the base weights: retains what the base knew.")] = None,
    patience: Annotated[int, typer.Option("--patience", help="Validations without improvement before stopping; 0: never.")] = 5,
    time_budget: Annotated[float, typer.Option("--time-budget", min=0, help="Seconds of training (after the range test); 0: no limit.")] = 600,
    keep_base: Annotated[float, typer.Option("--keep-base", min=0, max=1, help="Mix the base back in (wise-ft α) until this share of its R@1 on its own domain is kept; 0: off.")] = 0.9,
    base_pairs: Annotated[Optional[Path], typer.Option("--base-pairs", help="Pairs of the base model's own domain, for --rehearse and --keep-base (built in for clipdex-tiny).")] = None,
    rehearse: Annotated[float, typer.Option("--rehearse", min=0, max=0.9, help="Share of every batch drawn from the base's own domain (--base-pairs, built in for clipdex-tiny), so it is not forgotten; 0: off.")] = 0.25,
    eval_every: Annotated[int, typer.Option("--eval-every", help="Steps between validations; 0: every epoch.")] = 0,
    precision: Annotated[str, typer.Option("--precision", help="auto (bf16 on CUDA, fp32 on CPU), fp32 or bf16.")] = "auto",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the split and the batches.")] = 0,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write FILE.safetensors and FILE.json here instead of the library.")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Save in the library as NAME (default: PAIRS-tuned); use with --model NAME.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run from its last checkpoint.")] = False,
    checkpoint_every: Annotated[int, typer.Option("--checkpoint-every", min=1, help="Steps between the checkpoints --resume continues from.")] = 50,
    library: LibraryOpt = None,
    device: DeviceOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Fine-tune a model on your image–caption pairs and compare it with the base on held-out pairs."""
    from retrieval.evaluate import format_table
    from retrieval.finetune import finetune_pairs
    from retrieval.demo.world import reference_for, rehearsal_for
    from retrieval.trainer import TrainConfig

    config = TrainConfig(
        epochs=epochs, max_steps=max_steps, batch_size=batch_size, accum_steps=accum_steps, lr=_rate(lr),
        weight_decay=weight_decay, warmup_steps=warmup_steps, val_fraction=val_fraction, seed=seed,
        lock_image=lock_image, lock_text=lock_text, lora_rank=lora_rank, wise_ft=wise_ft,
        patience=patience, eval_every=eval_every, precision=precision, time_budget_s=time_budget or None,
        keep_base=keep_base or None, checkpoint_every=checkpoint_every, rehearse=rehearse,
    )  # fmt: skip
    with open_library(library, None, device) as lib, train_progress() as progress:
        result = finetune_pairs(lib, pairs, config, base=model_spec(model, checkpoint), val_pairs=val,
                                out=out, name=name, progress=progress, resume=resume, base_pairs=base_pairs,
                                reference=reference_for, note=note, rehearsal=rehearsal_for)  # fmt: skip
    for problem in result.problems:
        note(f"warning: {problem}; skipped")
    if as_json:
        print_json(result.card)
        return
    typer.echo(format_table({"base": result.before, "tuned": result.after}))
    load = f"--model {name or result.weights.stem}" if out is None else f"--model {result.spec.name} --checkpoint {out}"
    note(f"chart of the run: {result.chart}")
    note(f"saved {result.weights}; index with it: clipdex index {load}, then: clipdex use {load.removeprefix('--model ')}")


def _rate(text: str) -> float | None:
    """`--lr auto` → None (the range test picks it), else the number."""
    if text.strip().lower() == "auto":
        return None
    try:
        return float(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is neither a number nor auto", param_hint="--lr") from None


def evaluate(
    pairs: PairsArg,
    model: ModelOpt = None,
    checkpoint: CheckpointOpt = None,
    library: LibraryOpt = None,
    device: DeviceOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Measure retrieval on image–caption pairs: recall@1/5/10 both ways and median rank."""
    from retrieval.evaluate import evaluate_pairs, format_table

    with open_library(library, None, device) as lib:
        metrics, problems = evaluate_pairs(lib, pairs, model_spec(model, checkpoint))
    for problem in problems:
        note(f"warning: {problem}; skipped")
    if metrics.shared_captions:
        note(f"{metrics.shared_captions} captions are shared by several images; any of those images counts as a hit")
    if as_json:
        print_json(metrics.to_dict())
    else:
        typer.echo(format_table({"model": metrics}) + f"\npairs {metrics.pairs}")


def use(
    model: Annotated[str, typer.Argument(help="A model as given to --model (NAME, NAME:TAG, or a saved model's name).")],
    checkpoint: CheckpointOpt = None,
    library: LibraryOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Make a model the library's default for search, once every item has a vector from it."""
    with open_library(library, None, device) as lib:
        row = lib.use(model_spec(model, checkpoint))  # type: ignore[arg-type]
    echo(f"searching with {row.fingerprint}")
