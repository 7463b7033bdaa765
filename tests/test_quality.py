"""Quality pinned: the shipped tiny weights' recall on a fixed generated set, and the premise of the fine-tuning benchmark."""

from __future__ import annotations

import pytest

from conftest import TINY
from indexer.models import load_encoder
from retrieval.demo import world
from retrieval.demo.domains import DOMAINS
from retrieval.evaluate import evaluate

SHIPPED_R1 = 0.990  # text→image R@1 of indexer/weights/clipdex-tiny.safetensors on the set below, measured on CPU
TOLERANCE = 0.01  # float summation order across CPUs and torch builds, not a change of weights


def test_shipped_tiny_weights_reach_their_recorded_recall() -> None:
    tiny = load_encoder(TINY, "cpu")
    scenes = world.from_scenes(world.make_scenes(200, 31, world.BASE, split="test"), tiny.input_spec)
    assert evaluate(tiny, scenes).text_to_image.recall[0] == pytest.approx(SHIPPED_R1, abs=TOLERANCE)


@pytest.mark.parametrize("name", sorted(DOMAINS))
def test_generated_domains_are_new_to_the_base_model(name: str) -> None:
    tiny = load_encoder(TINY, "cpu")
    test = DOMAINS[name].pairs(200, 2, tiny.input_spec)  # the benchmark's held-out pictures
    assert test.images == 200 and test.pairs == 400
    assert evaluate(tiny, test).text_to_image.recall[0] <= 0.1
