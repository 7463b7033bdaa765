"""A real fine-tuned model saved in a library, as `clipdex finetune --name` leaves it (weights, card, chart)."""

from __future__ import annotations

from pathlib import Path

from conftest import TINY
from indexer.model_store import MODELS_DIR
from indexer.models import load_encoder
from retrieval.demo import world
from retrieval.finetune import FinetuneResult, finetune
from retrieval.pair_data import split_by_image
from retrieval.trainer import TrainConfig

# --lr auto (so the chart has both curves), a few steps, no time budget: seconds on a busy machine.
QUICK = TrainConfig(batch_size=8, max_steps=4, eval_every=2, patience=0, checkpoint_every=1000, time_budget_s=None,
                    keep_base=None)  # fmt: skip


def save_tuned_model(home: Path, name: str) -> FinetuneResult:
    encoder = load_encoder(TINY, "cpu")
    data = world.from_scenes(world.make_scenes(16, 8, world.NEW), encoder.input_spec, size=64)
    train, val = split_by_image(data, 0.25, seed=0)
    return finetune(encoder, train, val, QUICK, home / MODELS_DIR / f"{name}.safetensors", source="new-world.csv")
