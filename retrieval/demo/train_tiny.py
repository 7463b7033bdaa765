"""Train the built-in `clipdex-tiny` weights on the synthetic world: `python -m retrieval.demo.train_tiny`.

Reproducible: a fixed seed draws the scenes, the initial weights and the batches.
Writes `indexer/weights/clipdex-tiny.safetensors` (fp16) and a JSON card with
the held-out recall of the shipped (fp16) weights, then prints that recall.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import open_clip
import torch
from safetensors.torch import save_file

from indexer.model_store import BUILTIN_DIR, register_builtin_models
from indexer.models import TINY_MODEL, ModelSpec, load_encoder
from retrieval.demo import world
from retrieval.demo.world import from_scenes
from retrieval.evaluate import RetrievalMetrics, evaluate
from retrieval.trainer import TrainConfig, TrainProgress, train

SEED = 20260101
TINY_WEIGHTS = BUILTIN_DIR / f"{TINY_MODEL}.safetensors"  # with its card beside it: a built-in model
TRAIN_SCENES = 6_000
HELD_OUT_SCENES = 500
CONFIG = TrainConfig(
    epochs=100, max_steps=400, batch_size=128, lr=1e-3, weight_decay=0.1, warmup_steps=60,
    eval_every=150, patience=0, seed=SEED, checkpoint_every=10**9,
)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=TINY_WEIGHTS, help="where to write the fp16 safetensors")
    parser.add_argument("--steps", type=int, default=CONFIG.max_steps, help="optimizer steps")
    parser.add_argument("--scenes", type=int, default=TRAIN_SCENES, help="training scenes")
    args = parser.parse_args(argv)
    torch.manual_seed(SEED)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        encoder = load_encoder(ModelSpec(TINY_MODEL, None, _initial_weights(Path(tmp))), "cpu")
    spec = encoder.input_spec
    data = from_scenes(world.make_scenes(args.scenes, SEED), spec)
    held_out = {
        "unseen scenes": from_scenes(world.make_scenes(HELD_OUT_SCENES, SEED, split="test"), spec),
        "held-out combinations": from_scenes(world.make_scenes(HELD_OUT_SCENES, SEED, split="held-out-combos"), spec),
    }
    _log(f"{data.images} training images, {data.pairs} pairs ({time.monotonic() - started:.0f}s)")
    val = from_scenes(world.make_scenes(300, SEED + 1, split="test"), spec)  # picks the best step
    config = TrainConfig(**{**asdict(CONFIG), "max_steps": args.steps})
    outcome = train(encoder, data, val, config, progress=_report)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in outcome.model.state_dict().items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(args.out), metadata={"arch": TINY_MODEL, "seed": str(SEED)})
    os.chmod(args.out, 0o644)  # shipped in the package: readable by everyone
    shipped = load_encoder(ModelSpec(TINY_MODEL, None, str(args.out.resolve())), "cpu")
    metrics = {name: evaluate(shipped, d) for name, d in held_out.items()}
    card = _card(config, args, data.pairs, outcome.pairs_per_s, time.monotonic() - started, metrics)
    args.out.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    for name, m in metrics.items():
        t2i = m.text_to_image
        print(f"{name:<22} gallery {held_out[name].images:>4} images  text→image R@1 {t2i.recall[0]:.3f}  R@5 {t2i.recall[1]:.3f}"
              f"  image→text R@1 {m.image_to_text.recall[0]:.3f}")  # fmt: skip
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB) in {time.monotonic() - started:.0f}s")
    return 0


def _initial_weights(folder: Path) -> str:
    """Seeded random weights, written where load_encoder can read them."""
    register_builtin_models()
    logging.disable(logging.WARNING)  # open_clip warns that the model starts random, which is the point
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SEED)
            model = open_clip.create_model(TINY_MODEL, pretrained=None, load_weights=False)
    finally:
        logging.disable(logging.NOTSET)
    path = folder / "init.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return str(path)


def _report(p: TrainProgress) -> None:
    if p.val_score is not None or p.step % 50 == 0:
        val = f"  val R@1 {p.val_score:.3f}" if p.val_score is not None else ""
        _log(f"step {p.step}/{p.total_steps}  loss {p.loss:.3f}  {p.pairs_per_s:.0f} pairs/s{val}")


def _card(
    config: TrainConfig, args: argparse.Namespace, pairs: int, rate: float, seconds: float, metrics: dict[str, RetrievalMetrics]
) -> dict[str, object]:
    return {
        "arch": TINY_MODEL,
        "trained_by": "python -m retrieval.demo.train_tiny",
        "seed": SEED,
        "data": {"world": "retrieval.demo.world BASE", "train_scenes": args.scenes, "train_pairs": pairs},
        "hyperparameters": {**asdict(config), "max_steps": args.steps},
        "training": {"pairs_per_s": round(rate, 1), "seconds": round(seconds, 1)},
        "held_out": {name: m.to_dict() for name, m in metrics.items()},
        # zero-shot tags (retrieval.tagging): prompts in the shape of the world's captions, every size and background
        "prompt_templates": [f"a {size} {{}} on a {bg} background" for size in world.SIZES for bg in world.BACKGROUNDS],
    }


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
