"""Rehearsal: a share of every fine-tuning batch comes from the base model's own domain, never from where retention is measured."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cli.app import app
from conftest import QUICK_TRAIN as QUICK
from indexer.models import Encoder
from retrieval.demo import world
from retrieval.finetune import REFERENCE_SHARE, split_base_pairs
from retrieval.pair_data import PairData
from retrieval.batches import Batches
from retrieval.trainer import TrainConfig, train

runner = CliRunner()


@pytest.fixture(scope="module")
def new_and_old(tiny: Encoder) -> tuple[PairData, PairData]:
    new = world.from_scenes(world.make_scenes(18, 8, world.NEW), tiny.input_spec, size=64)
    old = world.from_scenes(world.make_scenes(10, 5, world.BASE), tiny.input_spec, size=64)
    return new, old


def test_each_batch_takes_its_share_from_the_base_domain_and_every_new_image_once_an_epoch(
    new_and_old: tuple[PairData, PairData],
) -> None:
    new, old = new_and_old
    batches = Batches(new, old, 8, 0.25, 0)
    assert (batches.n_new, batches.n_old, batches.per_epoch) == (6, 2, 3)  # 18 new images / 6 a step
    new_seen: list[int] = []
    old_seen: list[int] = []
    for step in range(3):
        pixels, pairs = batches.at(step)
        assert pixels.shape == (8, *new.pixels.shape[1:]) and pairs.shape == (8,)
        assert (pairs[:6] < new.pairs).all() and (pairs[6:] >= new.pairs).all()
        for px, p in zip(pixels[:6], pairs[:6]):  # each picture goes with one of its own captions
            assert np.array_equal(px, new.pixels[new.image_of[p]])
            new_seen.append(int(new.image_of[p]))
        for px, p in zip(pixels[6:], pairs[6:] - new.pairs):
            assert np.array_equal(px, old.pixels[old.image_of[p]])
            old_seen.append(int(old.image_of[p]))
    assert sorted(new_seen) == list(range(18))  # an epoch of the new pairs
    assert len(set(old_seen)) == 6  # 10 base images, 5 steps to see them all: no repeats inside that
    assert np.array_equal(batches.at(1)[1], Batches(new, old, 8, 0.25, 0).at(1)[1])
    plain = Batches(new, None, 8, 0.25, 0)
    assert (plain.n_new, plain.n_old, plain.per_epoch) == (8, 0, 2) and (plain.at(0)[1] < new.pairs).all()


def test_training_reads_the_rehearsed_captions(tiny: Encoder, new_and_old: tuple[PairData, PairData]) -> None:
    new, old = new_and_old
    config = TrainConfig(**{**QUICK.__dict__, "max_steps": 2})
    rehearsed = train(tiny, new, new, config, rehearsal=old).model.state_dict()
    plain = train(tiny, new, new, config).model.state_dict()
    off = train(tiny, new, new, TrainConfig(**{**config.__dict__, "rehearse": 0.0}), rehearsal=old).model.state_dict()
    assert all(np.array_equal(plain[k].numpy(), off[k].numpy()) for k in plain)  # 0 is off
    assert not all(np.array_equal(plain[k].numpy(), rehearsed[k].numpy()) for k in plain)


def test_rehearsal_never_uses_the_scenes_retention_is_measured_on(tiny: Encoder) -> None:
    rehearsal = world.rehearsal_for(tiny.arch, tiny.input_spec)
    reference = world.reference_for(tiny.arch, tiny.input_spec)
    assert rehearsal is not None and reference is not None and (rehearsal.images, rehearsal.pairs) == (400, 800)
    benchmark = world.from_scenes(world.make_scenes(200, 31, world.BASE, split="test"), tiny.input_spec)
    assert not set(rehearsal.keys) & set(reference.keys) and not set(rehearsal.keys) & set(benchmark.keys)
    assert world.rehearsal_for("ViT-B-32", tiny.input_spec) is None


def test_base_pairs_split_into_what_is_measured_and_what_is_rehearsed(new_and_old: tuple[PairData, PairData]) -> None:
    old = new_and_old[1]
    reference, rehearse = split_base_pairs(old, TrainConfig(), measures=True)
    assert reference is not None and rehearse is not None
    assert reference.images == round(REFERENCE_SHARE * old.images) and rehearse.images == old.images - reference.images
    assert not set(reference.keys) & set(rehearse.keys)
    assert split_base_pairs(old, TrainConfig(rehearse=0.0), measures=True) == (old, None)
    assert split_base_pairs(old, TrainConfig(), measures=False) == (None, old)


def test_cli_rehearse_is_in_the_card_and_zero_turns_it_off(tmp_path: Path) -> None:
    csv_path = world.write_world(tmp_path / "w", world.make_scenes(16, 9, world.NEW), size=64)
    base_csv = world.write_world(tmp_path / "b", world.make_scenes(10, 4, world.BASE), size=64)
    common = ["finetune", str(csv_path), "--model", "clipdex-tiny", "--lr", "5e-4", "--batch-size", "8",
              "--max-steps", "2", "--keep-base", "0", "--json"]  # fmt: skip
    run = runner.invoke(app, [*common, "--out", str(tmp_path / "a.safetensors"), "--rehearse", "0.5"])
    assert run.exit_code == 0, run.output
    card = json.loads(run.stdout)
    assert card["rehearsal"]["share"] == 0.5 and card["rehearsal"]["pairs"] == 800 and card["hyperparameters"]["rehearse"] == 0.5
    assert "rehearsing 800 pairs of the base's own domain: 50% of every batch" in run.stderr
    own = runner.invoke(app, [*common, "--out", str(tmp_path / "b.safetensors"), "--base-pairs", str(base_csv)])
    assert own.exit_code == 0, own.output
    assert json.loads(own.stdout)["rehearsal"] == {**json.loads(own.stdout)["rehearsal"], "share": 0.25, "pairs": 20}
    off = runner.invoke(app, [*common, "--out", str(tmp_path / "c.safetensors"), "--rehearse", "0"])
    assert off.exit_code == 0, off.output
    assert json.loads(off.stdout)["rehearsal"] is None and "rehearsing" not in off.stderr
    bad = runner.invoke(app, [*common, "--out", str(tmp_path / "d.safetensors"), "--rehearse", "1"])
    assert bad.exit_code == 2 and "--rehearse" in bad.output


def test_the_anchor_targets_are_the_base_embeddings_of_each_rehearsed_row(
    tiny: Encoder, new_and_old: tuple[PairData, PairData]
) -> None:
    from indexer.encode import encode_images, encode_texts
    from retrieval.batches import Anchor

    new, old = new_and_old
    batches = Batches(new, old, 8, 0.25, 0)
    anchor = Anchor.of_base(tiny, batches, 10.0)
    pixels, pairs = batches.at(2)
    tokens = batches.tokens(tiny)
    x = torch.zeros((8, 3, 1, 1))
    rows = anchor.at(x, tokens, pairs)
    old_pairs = pairs[6:] - new.pairs
    images = encode_images(tiny, old.pixels[old.image_of[old_pairs]])
    texts = encode_texts(tiny, [old.captions[p] for p in old_pairs])
    assert rows.x.shape == (2, 3, 1, 1) and torch.equal(rows.tokens, tokens[pairs[6:]]) and rows.weight == 10.0
    np.testing.assert_allclose(rows.image_target.numpy(), images, atol=1e-6)
    np.testing.assert_allclose(rows.text_target.numpy(), texts, atol=1e-6)


def test_the_anchor_keeps_rehearsed_embeddings_nearer_the_base(tiny: Encoder, new_and_old: tuple[PairData, PairData]) -> None:
    from indexer.encode import encode_images

    new, old = new_and_old
    config = TrainConfig(**{**QUICK.__dict__, "max_steps": 6, "lr": 3e-3, "rehearse": 0.5})
    before = encode_images(tiny, old.pixels)

    def drift(anchor: float) -> float:
        net = train(tiny, new, new, TrainConfig(**{**config.__dict__, "anchor": anchor}), rehearsal=old).model
        after = encode_images(replace(tiny, model=net, bf16_image_tower=None), old.pixels)
        return float(np.mean(1 - np.sum(before * after, axis=1)))

    assert drift(10.0) < 0.5 * drift(0.0)
