"""Train the built-in `clipdex-tiny` weights on the synthetic world: `python -m retrieval.demo.train_tiny`.

Two stages, as CLIP-style models are often built from a pre-trained image tower:
1. **Words** (`learn_words`): the vision tower, from seeded random weights, learns which
   words its scene's captions use: a linear head on its output, one binary cross-entropy
   per word of the world's vocabulary ("bag of words" weak supervision from captions, as
   in Joulin et al., "Learning Visual Features from Large Weakly Supervised Data", ECCV
   2016). The head is then dropped.
2. **Contrastive, image tower locked** (LiT: Zhai et al., "LiT: Zero-Shot Transfer with
   Locked-image text Tuning", CVPR 2022): the text tower learns to meet the image tower
   with the CLIP loss (retrieval.trainer.train, the loop fine-tuning uses), on each
   scene's two captions and on shorter ones that name part of it
   (world.partial_captions), as people's alt-texts do.

Why: trained with the contrastive loss alone, from random weights (the first
clipdex-tiny), the tower learnt no shapes, since colours, sizes, places and backgrounds
already tell almost every caption in a batch from the others; its image vectors held
none (benchmarks/tags.py's probe column). The words stage puts them there, and the
partial captions let a prompt that names a shape alone (a zero-shot tag) find them.
README, "The built-in model", gives the figures.

Reproducible: a fixed seed draws the scenes, the initial weights and the batches (stage 1
runs under bf16 autocast on a CPU with AVX-512-BF16 or AMX, else in fp32, so the weights
depend on that too).
Writes `indexer/weights/clipdex-tiny.safetensors` (fp16) and a JSON card with
the held-out recall of the shipped (fp16) weights, then prints that recall.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from indexer.model_store import BUILTIN_DIR, register_builtin_models
from indexer.models import TINY_MODEL, Encoder, ModelSpec, load_encoder
from indexer.precision_guard import cpu_has_native_bf16
from retrieval.demo import world
from retrieval.demo.world import from_scenes
from retrieval.contrastive import pixels_to_input
from retrieval.evaluate import RetrievalMetrics, evaluate
from retrieval.pair_data import build
from retrieval.trainer import TrainConfig, TrainProgress, train

SEED = 20260101
TINY_WEIGHTS = BUILTIN_DIR / f"{TINY_MODEL}.safetensors"  # with its card beside it: a built-in model
TRAIN_SCENES = 6_000
HELD_OUT_SCENES = 500
CONFIG = TrainConfig(
    epochs=100, max_steps=800, batch_size=128, lr=1e-3, weight_decay=0.1, warmup_steps=60,
    eval_every=150, patience=0, seed=SEED, checkpoint_every=10**9, lock_image=True, time_budget_s=None,
)  # fmt: skip  # stage 2: the image tower stays as stage 1 left it (LiT, Zhai et al., CVPR 2022)


@dataclass(frozen=True)
class WordsConfig:
    """Stage 1: the vision tower learns its scene's caption words."""

    scenes: int = 30_000  # of another random stream than stage 2's scenes
    steps: int = 3_000
    batch_size: int = 128
    lr: float = 1e-3
    warmup_steps: int = 60
    weight_decay: float = 0.1


WORDS = WordsConfig()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=TINY_WEIGHTS, help="where to write the fp16 safetensors")
    parser.add_argument("--steps", type=int, default=CONFIG.max_steps, help="optimizer steps")
    parser.add_argument("--scenes", type=int, default=TRAIN_SCENES, help="training scenes")
    parser.add_argument("--word-steps", type=int, default=WORDS.steps, help="stage 1 steps (0: contrastive only)")
    args = parser.parse_args(argv)
    torch.manual_seed(SEED)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        encoder = load_encoder(ModelSpec(TINY_MODEL, None, _initial_weights(Path(tmp))), "cpu")
    spec = encoder.input_spec
    words = WordsConfig(**{**asdict(WORDS), "steps": args.word_steps})
    word_loss = learn_words(encoder, world.make_scenes(words.scenes, SEED + 2), words) if words.steps else None
    scenes = world.make_scenes(args.scenes, SEED)
    data = build(list(world.render_pixels(scenes, spec)), [(*s.captions, *world.partial_captions(s)) for s in scenes])
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
    card = _card(config, words, word_loss, args, data.pairs, outcome.pairs_per_s, time.monotonic() - started, metrics)
    args.out.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    for name, m in metrics.items():
        t2i = m.text_to_image
        print(f"{name:<22} gallery {held_out[name].images:>4} images  text→image R@1 {t2i.recall[0]:.3f}  R@5 {t2i.recall[1]:.3f}"
              f"  image→text R@1 {m.image_to_text.recall[0]:.3f}")  # fmt: skip
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB) in {time.monotonic() - started:.0f}s")
    return 0


def caption_words(scenes: list[world.Scene]) -> tuple[list[str], np.ndarray]:
    """The words the scenes' captions use, sorted, and (N, V) float32: 1 where scene n's captions use word v."""
    used = [{w for caption in scene.captions for w in re.findall(r"[a-z]+", caption)} for scene in scenes]
    vocabulary = sorted(set().union(*used))
    column = {w: j for j, w in enumerate(vocabulary)}
    targets = np.zeros((len(scenes), len(vocabulary)), dtype=np.float32)
    for n, ws in enumerate(used):
        targets[n, [column[w] for w in ws]] = 1.0
    return vocabulary, targets


def learn_words(encoder: Encoder, scenes: list[world.Scene], config: WordsConfig) -> float:
    """Stage 1: train `encoder.model.visual` in place to tell which words each scene's captions use; return the last loss.

    A linear head on the tower's output scores every word of the vocabulary (binary
    cross-entropy each); AdamW, warm-up then cosine decay, bf16 autocast where the CPU
    has it. The head is dropped: only the tower keeps what it learnt.
    """
    started = time.monotonic()
    vocabulary, targets = caption_words(scenes)
    pixels = world.render_pixels(scenes, encoder.input_spec)  # (N, H, W, 3) uint8
    _log(f"stage 1: {len(scenes)} scenes, {len(vocabulary)} words ({time.monotonic() - started:.0f}s)")
    tower = encoder.model.visual
    assert isinstance(tower, torch.nn.Module)
    tower.float().train()
    head = torch.nn.Linear(encoder.dim, len(vocabulary))
    optimizer = torch.optim.AdamW([*tower.parameters(), *head.parameters()], lr=config.lr, weight_decay=config.weight_decay)
    rng = np.random.default_rng(SEED)
    y = torch.from_numpy(targets)
    bf16 = cpu_has_native_bf16()  # emulated bf16 is slower than fp32
    loss = torch.zeros(())
    for step in range(config.steps):
        rate = config.lr * min(1.0, (step + 1) / config.warmup_steps) * 0.5 * (1 + np.cos(np.pi * step / config.steps))
        for group in optimizer.param_groups:
            group["lr"] = rate
        rows = rng.choice(len(pixels), config.batch_size, replace=False)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = head(tower(pixels_to_input(encoder, pixels[rows])))
        loss = F.binary_cross_entropy_with_logits(logits.float(), y[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (step + 1) % 250 == 0:
            _log(f"stage 1 step {step + 1}/{config.steps}  loss {loss.item():.4f} ({time.monotonic() - started:.0f}s)")
    tower.eval()
    return float(loss.item())


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
    config: TrainConfig, words: WordsConfig, word_loss: float | None, args: argparse.Namespace, pairs: int, rate: float,
    seconds: float, metrics: dict[str, RetrievalMetrics],
) -> dict[str, object]:  # fmt: skip
    return {
        "arch": TINY_MODEL,
        "trained_by": "python -m retrieval.demo.train_tiny",
        "seed": SEED,
        "data": {"world": "retrieval.demo.world BASE", "train_scenes": args.scenes, "train_pairs": pairs},
        "stage_1_words": {**asdict(words), "seed_stream": SEED + 2, "last_loss": word_loss},
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
