"""How the built-in clipdex-tiny is trained (retrieval.demo.train_tiny): the words stage and the partial captions."""

from __future__ import annotations

import numpy as np
import torch

from indexer.models import TINY_MODEL, ModelSpec, load_encoder
from retrieval.demo import world
from retrieval.demo.train_tiny import WordsConfig, caption_words, learn_words

RED_CIRCLE = world.Thing("circle", "red", "large", "striped", 0.27, 0.5)
BLUE_CROSS = world.Thing("cross", "blue", "small", "plain", 0.5, 0.5)


def test_partial_captions_name_each_kind_of_thing_alone_and_with_its_colour() -> None:
    group = world.Scene("grey", (RED_CIRCLE, RED_CIRCLE), ("two large red striped circles on a grey background",))
    assert world.partial_captions(group) == (
        "a circle", "a red circle", "a large circle on a grey background", "something red",
    )  # fmt: skip
    pair = world.Scene("white", (RED_CIRCLE, BLUE_CROSS), ("…",))
    assert world.partial_captions(pair)[4:] == (
        "a cross", "a blue cross", "a small cross on a white background", "something blue",
    )  # fmt: skip


def test_caption_words_mark_the_words_each_scene_uses() -> None:
    scenes = [
        world.Scene("grey", (RED_CIRCLE,), ("a large red circle", "on a grey background, a red circle")),
        world.Scene("white", (BLUE_CROSS,), ("a small blue cross",)),
    ]
    vocabulary, targets = caption_words(scenes)
    assert vocabulary == ["a", "background", "blue", "circle", "cross", "grey", "large", "on", "red", "small"]
    assert targets.tolist() == [[1, 1, 0, 1, 0, 1, 1, 1, 1, 0], [1, 0, 1, 0, 1, 0, 0, 0, 0, 1]]


def test_the_words_stage_trains_the_vision_tower_only() -> None:
    encoder = load_encoder(ModelSpec.parse(TINY_MODEL), "cpu", "fp32")
    before = {k: v.clone() for k, v in encoder.model.state_dict().items()}
    loss = learn_words(encoder, world.make_scenes(16, 7), WordsConfig(scenes=16, steps=3, batch_size=8, warmup_steps=1))
    after = encoder.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("visual.") for k in changed)
    assert "visual.proj" in changed and np.isfinite(loss) and loss > 0
