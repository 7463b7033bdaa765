"""Fine-tuning, evaluation and switching models: real training steps on the built-in tiny model."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from cli.app import app
from conftest import TINY, env_without_pytest, make_photo
from retrieval.demo import world
from retrieval.contrastive import contrastive_loss, pixels_to_input, train_step
from retrieval.evaluate import first_hit_ranks, retrieval_metrics
from retrieval.finetune import finetune, wise_ft
from retrieval.finetune_errors import ModelIncomplete
from retrieval.library import Library
from retrieval.lora import add_lora, merge_lora
from indexer.models import Encoder, ModelSpec, load_encoder
from retrieval.demo.world import from_scenes
from retrieval.pair_data import PairData, split_by_image
from retrieval.pairs import Problem, read_pairs
from retrieval.trainer import TrainConfig, TrainProgress, train

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent
DEMO_R1 = 0.5  # lower bound recorded for `clipdex demo --images 30`; see tests/test_quality.py for the exact figure
FAST = TrainConfig(epochs=50, batch_size=16, lr=5e-4, warmup_steps=2, patience=0, eval_every=1000, checkpoint_every=1000)


@pytest.fixture(scope="module")
def tiny() -> Encoder:
    return load_encoder(TINY, "cpu")


@pytest.fixture(scope="module")
def new_world(tiny: Encoder) -> tuple[PairData, PairData]:
    """Scenes of shapes and textures the tiny model never saw, split by image."""
    data = from_scenes(world.make_scenes(80, 5, world.NEW), tiny.input_spec)
    return split_by_image(data, 0.25, seed=0)


def cfg(**changes: object) -> TrainConfig:
    return TrainConfig(**{**FAST.__dict__, **changes})  # type: ignore[arg-type]


def test_loss_decreases_over_real_steps(tiny: Encoder, new_world: tuple[PairData, PairData]) -> None:
    data = new_world[0]
    x = pixels_to_input(tiny, data.pixels)  # every training image, with its first caption
    tokens = tiny.tokenizer([data.captions[int(np.flatnonzero(data.image_of == i)[0])] for i in range(data.images)])

    def loss_of(model: torch.nn.Module) -> float:
        with torch.no_grad():
            img, txt = F.normalize(model.encode_image(x), dim=-1), F.normalize(model.encode_text(tokens), dim=-1)
            return float(contrastive_loss(img, txt, model.logit_scale))

    steps: list[int] = []
    out = train(tiny, data, new_world[1], cfg(max_steps=12), progress=lambda p: steps.append(p.step))
    assert steps == list(range(1, 13))
    assert loss_of(out.model) < 0.7 * loss_of(tiny.model)


def test_accumulated_gradient_equals_full_batch_gradient(tiny: Encoder, new_world: tuple[PairData, PairData]) -> None:
    data = new_world[0]
    x = pixels_to_input(tiny, data.pixels[:12])
    tokens = tiny.tokenizer([data.captions[int(np.flatnonzero(data.image_of == i)[0])] for i in range(12)])
    grads = []
    for accum in (1, 4):
        model = _copy(tiny.model).train()
        loss = train_step(model, x, tokens, accum_steps=accum)
        grads.append((loss, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (loss_full, full), (loss_acc, acc) = grads
    assert loss_acc == pytest.approx(loss_full, abs=1e-6)
    assert full.keys() == acc.keys() and "logit_scale" in full
    for name in full:  # equal up to float32 summation order: within 1e-5 of each tensor's largest gradient
        scale = float(full[name].abs().max())
        assert scale > 0 and float((acc[name] - full[name]).abs().max()) <= 1e-5 * scale, name


@pytest.mark.parametrize("lock", ["image", "text"])
def test_locked_tower_stays_bit_identical(tiny: Encoder, new_world: tuple[PairData, PairData], lock: str) -> None:
    out = train(tiny, new_world[0], new_world[1], cfg(max_steps=3, lock_image=lock == "image", lock_text=lock == "text"))
    before, after = tiny.model.state_dict(), out.model.state_dict()
    locked = [k for k in before if k.startswith("visual.") == (lock == "image") and k != "logit_scale"]
    free = [k for k in before if k not in locked and k != "logit_scale"]
    assert locked and all(torch.equal(before[k], after[k]) for k in locked)
    assert any(not torch.equal(before[k], after[k]) for k in free)


def test_lora_merge_equals_w_plus_ba_and_the_adapter_model(tiny: Encoder, new_world: tuple[PairData, PairData]) -> None:
    model = _copy(tiny.model).eval()
    w = model.transformer.resblocks[0].attn.in_proj_weight.detach().clone()
    add_lora(model, rank=4, alpha=8.0)
    delta = model.transformer.resblocks[0].attn.parametrizations.in_proj_weight[0]
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "B") and isinstance(module.B, torch.nn.Parameter):
                module.B.normal_(0, 0.05)  # as if trained: B starts at zero
    expected = w + 2.0 * (delta.B @ delta.A).detach()  # alpha / rank = 2
    x = pixels_to_input(tiny, new_world[0].pixels[:4])
    tokens = tiny.tokenizer(list(new_world[0].captions[:4]))
    with torch.no_grad():
        adapted = (model.encode_image(x), model.encode_text(tokens))
        assert merge_lora(model) == 2 * (len(model.visual.transformer.resblocks) + len(model.transformer.resblocks))
        merged = (model.encode_image(x), model.encode_text(tokens))
    torch.testing.assert_close(model.transformer.resblocks[0].attn.in_proj_weight, expected, rtol=0, atol=1e-6)
    assert not any("parametrizations" in k for k in model.state_dict())
    torch.testing.assert_close(merged[0], adapted[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(merged[1], adapted[1], rtol=0, atol=1e-5)
    assert not torch.allclose(merged[1], tiny.model.encode_text(tokens), atol=1e-3)


def test_metrics_on_a_hand_built_similarity_matrix() -> None:
    # 4 captions × 3 images; caption 3 is shared by images 1 and 2.
    sim = np.array(
        [
            [0.9, 0.1, 0.2],  # caption 0 → image 0: rank 1
            [0.8, 0.3, 0.1],  # caption 1 → image 1: image 0 is above, rank 2
            [0.5, 0.5, 0.4],  # caption 2 → image 2: rank 3
            [0.1, 0.2, 0.3],  # caption 3 → images 1 or 2: image 2 first, rank 1
        ]
    )
    m = retrieval_metrics(sim, [[0], [1], [2], [1, 2]], pairs=5)
    assert first_hit_ranks(sim, [[0], [1], [2], [1, 2]]).tolist() == [1, 2, 3, 1]
    # image 0: caption 0 first; image 1: its best caption (1, 0.3) is behind caption 2 (0.5); image 2: caption 2 first
    assert first_hit_ranks(sim.T, [[0], [1, 3], [2, 3]]).tolist() == [1, 2, 1]
    assert m.to_dict() == {
        "text_to_image": {"R@1": 0.5, "R@5": 1.0, "R@10": 1.0, "median_rank": 1.5},
        "image_to_text": {"R@1": 0.6667, "R@5": 1.0, "R@10": 1.0, "median_rank": 1.0},
        "pairs": 5,
    }
    assert m.shared_captions == 1
    assert first_hit_ranks(np.array([[0.5, 0.5, 0.5]]), [[1]]).tolist() == [3]  # ties count against the model


def test_bad_rows_are_reported_with_line_numbers(tmp_path: Path) -> None:
    make_photo(tmp_path / "img" / "a.jpg", seed=1)
    make_photo(tmp_path / "img" / "b.png", seed=2)
    (tmp_path / "img" / "broken.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "pairs.csv").write_text(
        'image,caption\nimg/a.jpg,a red thing\nimg/a.jpg,"a second, quoted\ncaption"\n'
        "img/missing.jpg,nothing\nimg/b.png,\nimg/b.png\nimg/broken.jpg,broken\n\nimg/b.png,a blue thing\n"
    )
    got = read_pairs(tmp_path / "pairs.csv")
    src = str(tmp_path / "pairs.csv")
    assert [(p.image.name, p.caption, p.line) for p in got.pairs] == [
        ("a.jpg", "a red thing", 2), ("a.jpg", "a second, quoted\ncaption", 3),
        ("broken.jpg", "broken", 8), ("b.png", "a blue thing", 10),
    ]  # fmt: skip
    assert got.problems == [
        Problem(src, 5, "image img/missing.jpg does not exist"),
        Problem(src, 6, "empty caption"),
        Problem(src, 7, "expected 2 columns, found 1"),
    ]
    (tmp_path / "pairs.jsonl").write_text(
        '{"image": "img/a.jpg", "caption": ["one", "two"]}\n{not json\n{"caption": "x"}\n{"image": "img/b.png", "caption": "b"}\n'
    )
    got = read_pairs(tmp_path / "pairs.jsonl")
    assert [(p.caption, p.line) for p in got.pairs] == [("one", 1), ("two", 1), ("b", 4)]
    assert [(p.line, p.reason.split(" (")[0]) for p in got.problems] == [(2, "not valid JSON"), (3, "needs an object with an 'image' string")]


def test_unreadable_images_are_skipped_with_their_lines(tmp_path: Path, tiny: Encoder) -> None:
    from retrieval.pair_data import load_pairs

    make_photo(tmp_path / "a.jpg", seed=1)
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "p.tsv").write_text("caption\timage\nfirst\ta.jpg\nbad\tbroken.jpg\nagain bad\tbroken.jpg\n")
    data, problems = load_pairs(read_pairs(tmp_path / "p.tsv"), tiny.input_spec)
    assert (data.images, data.captions) == (1, ("first",))
    assert [(p.line, p.reason) for p in problems] == [
        (3, f"image {tmp_path / 'broken.jpg'}: not a supported image format"),
        (4, f"image {tmp_path / 'broken.jpg'}: not a supported image format"),
    ]


def test_folder_of_images_with_sidecar_captions(tmp_path: Path) -> None:
    make_photo(tmp_path / "x" / "one.jpg", seed=1)
    make_photo(tmp_path / "x" / "two.png", seed=2)
    (tmp_path / "x" / "one.txt").write_text("first caption\n\nsecond caption\n")
    got = read_pairs(tmp_path / "x")
    assert [(p.image.name, p.caption, Path(p.source).name, p.line) for p in got.pairs] == [
        ("one.jpg", "first caption", "one.txt", 1), ("one.jpg", "second caption", "one.txt", 3),
    ]  # fmt: skip
    assert [p.reason for p in got.problems] == ["no caption file two.txt"]


def test_split_is_by_image_and_deterministic(new_world: tuple[PairData, PairData]) -> None:
    train_data, val = new_world
    assert not set(train_data.keys) & set(val.keys)
    assert (train_data.images, val.images) == (60, 20)
    again = split_by_image(PairData(
        np.concatenate([train_data.pixels, val.pixels]), train_data.keys + val.keys,
        np.concatenate([train_data.image_of, val.image_of + train_data.images]), train_data.captions + val.captions,
    ), 0.25, seed=0)  # fmt: skip
    assert set(again[1].keys) == set(val.keys)


def test_checkpoint_round_trips_and_loads_as_a_model(tiny: Encoder, new_world: tuple[PairData, PairData], tmp_path: Path) -> None:
    out = tmp_path / "tuned.safetensors"
    result = finetune(tiny, new_world[0], new_world[1], cfg(max_steps=4), out)
    card = json.loads((tmp_path / "tuned.json").read_text())
    assert card["arch"] == "clipdex-tiny" and card["base"]["fingerprint"] == tiny.fingerprint
    assert card["training"]["steps"] == 4 and card["data"]["val_images"] == 20
    assert set(card["metrics"]) == {"base", "tuned"} and card["hyperparameters"]["max_steps"] == 4
    loaded = load_encoder(ModelSpec.parse("clipdex-tiny", out), "cpu")
    assert loaded.fingerprint == card["fingerprint"] != tiny.fingerprint
    from retrieval.evaluate import evaluate

    assert evaluate(loaded, new_world[1]) == result.after


def test_a_lora_run_saves_merged_plain_weights(tiny: Encoder, new_world: tuple[PairData, PairData], tmp_path: Path) -> None:
    out = tmp_path / "lora.safetensors"
    result = finetune(tiny, new_world[0], new_world[1], cfg(max_steps=2, lora_rank=2), out)
    loaded = load_encoder(result.spec, "cpu")  # strict load into a plain open_clip model
    changed = [k for k, v in tiny.model.state_dict().items() if not torch.equal(v, loaded.model.state_dict()[k])]
    assert changed and all(k.endswith(("attn.in_proj_weight", "attn.out_proj.weight")) or k == "logit_scale" for k in changed)


def test_resume_continues_from_the_saved_step_and_ends_identical(
    tiny: Encoder, new_world: tuple[PairData, PairData], tmp_path: Path
) -> None:
    config = cfg(max_steps=6, checkpoint_every=2)
    whole = train(tiny, new_world[0], new_world[1], config)
    state = tmp_path / "run.resume.pt"

    def interrupt(p: TrainProgress) -> None:
        if p.step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tiny, new_world[0], new_world[1], config, state_file=state, progress=interrupt)
    assert state.exists()
    steps: list[int] = []
    resumed = train(tiny, new_world[0], new_world[1], config, state_file=state, resume=True, progress=lambda p: steps.append(p.step))
    assert steps == [3, 4, 5, 6]  # the checkpoint of step 2 was the last one written
    assert not state.exists()
    for key, value in whole.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key


def test_wise_ft_interpolates_every_weight() -> None:
    base = {"w": torch.zeros(2, 2), "n": torch.tensor([1])}
    tuned = {"w": torch.full((2, 2), 4.0), "n": torch.tensor([7])}
    assert torch.equal(wise_ft(base, tuned, 0.25)["w"], torch.ones(2, 2))
    assert torch.equal(wise_ft(base, tuned, 0.0)["w"], base["w"]) and wise_ft(base, tuned, 0.5)["n"].item() == 7


def test_use_refuses_a_half_embedded_library_then_switches(tmp_path: Path, photos: Path, tiny: Encoder) -> None:
    weights = tmp_path / "other.safetensors"
    finetune(tiny, *_world_split(tiny), cfg(max_steps=2), weights)
    other = ModelSpec.parse("clipdex-tiny", weights)
    with Library.open(tmp_path / "lib") as lib:
        lib.index([photos], model=TINY)
        lib.index(model=other)
        more = tmp_path / "more"
        for i in range(3):
            make_photo(more / f"new{i}.jpg", seed=100 + i)
        lib.index([more])  # only the active model embeds these
        with pytest.raises(ModelIncomplete) as incomplete:
            lib.use(other)
        assert (incomplete.value.model, incomplete.value.images, incomplete.value.texts) == (other, 3, 0)
        assert lib.active_model().fingerprint == tiny.fingerprint  # type: ignore[union-attr]
    args = ["--library", str(tmp_path / "lib")]
    refused = runner.invoke(app, ["use", "clipdex-tiny", "--checkpoint", str(weights), *args])
    assert (refused.exit_code, refused.stderr) == (1, (
        f"error: 3 images and 0 texts have no vector from {other.label} yet; "
        f"run `clipdex index --model clipdex-tiny --checkpoint {other.checkpoint}` first\n"
    ))
    assert runner.invoke(app, ["index", "--model", "clipdex-tiny", "--checkpoint", str(weights), *args]).exit_code == 0
    switched = runner.invoke(app, ["use", "clipdex-tiny", "--checkpoint", str(weights), *args])
    assert switched.exit_code == 0, switched.output
    with Library.open(tmp_path / "lib") as lib:
        assert lib.active_model().checkpoint == str(weights)  # type: ignore[union-attr]


def test_cli_finetune_eval_index_use_with_a_named_model(tmp_path: Path) -> None:
    csv_path = world.write_world(tmp_path / "world", world.make_scenes(40, 9, world.NEW), size=64)
    with open(csv_path, "a") as f:
        f.write("scene00000.png,\nghost.png,a ghost\n")  # lines 82 and 83
    lib = ["--library", str(tmp_path / "lib")]
    tuned = runner.invoke(app, ["finetune", str(csv_path), "--model", "clipdex-tiny", "--name", "shapes", "--max-steps", "3",
                                "--batch-size", "8", "--val-fraction", "0.25", "--lr", "5e-4", "--keep-base", "0", *lib])  # fmt: skip
    assert tuned.exit_code == 0, tuned.output
    assert "text→image R@1" in tuned.output and "clipdex use shapes" in tuned.output
    assert f"warning: {csv_path}:82: empty caption; skipped" in tuned.output
    assert f"warning: {csv_path}:83: image ghost.png does not exist; skipped" in tuned.output
    assert (tmp_path / "lib" / "models" / "shapes.safetensors").is_file()
    evaluated = runner.invoke(app, ["eval", str(csv_path), "--model", "shapes", "--json", *lib])
    assert evaluated.exit_code == 0, evaluated.output
    metrics = json.loads(evaluated.stdout)
    assert list(metrics) == ["text_to_image", "image_to_text", "pairs"] and metrics["pairs"] == 80
    assert list(metrics["text_to_image"]) == ["R@1", "R@5", "R@10", "median_rank"]
    assert runner.invoke(app, ["index", str(tmp_path / "world"), "--model", "shapes", *lib]).exit_code == 0
    assert runner.invoke(app, ["use", "shapes", *lib]).exit_code == 0
    found = runner.invoke(app, ["search", "a red star", "--json", *lib])
    assert found.exit_code == 0 and len(json.loads(found.stdout)) == 10


def test_val_pairs_file_keeps_its_images_out_of_training(tmp_path: Path) -> None:
    from retrieval.finetune import finetune_pairs

    scenes = world.make_scenes(30, 11, world.NEW)
    train_csv = world.write_world(tmp_path / "w", scenes, size=64)
    val_csv = tmp_path / "w" / "val.csv"
    val_csv.write_text("image,caption\n" + "".join(f"scene{i:05d}.png,{scenes[i].captions[0]}\n" for i in range(6)))
    with Library.open(tmp_path / "lib") as lib:
        result = finetune_pairs(lib, train_csv, cfg(max_steps=2, batch_size=8), base=TINY, val_pairs=val_csv)
    assert result.weights == tmp_path / "lib" / "models" / "captions-tuned.safetensors"
    data = result.card["data"]
    assert (data["train_images"], data["val_images"], data["val_pairs"]) == (24, 6, 6)


def test_demo_runs_offline_as_a_user_runs_it(tmp_path: Path) -> None:
    env = {**env_without_pytest(), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-c", "import sys; from cli.app import main; sys.argv[0] = 'clipdex'; main()", "demo", "--images", "30"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "text → images" in run.stdout and "image → captions" in run.stdout
    recall = re.search(r"text → image over all 60 captions: R@1 ([\d.]+)  R@5 ([\d.]+)  R@10 ([\d.]+)", run.stdout)
    assert recall is not None, run.stdout
    r1, r5, r10 = (float(x) for x in recall.groups())
    assert r1 >= DEMO_R1 - 0.05 and r1 <= r5 <= r10 <= 1.0  # the shipped weights on the demo's 30 pictures
    assert "the demo library was temporary" in run.stderr and list(tmp_path.iterdir()) == []


def test_builtin_tiny_loads_the_shipped_weights_and_never_falls_back(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import shutil

    import indexer.model_store as model_store
    from indexer.errors import ModelNotAvailable

    assert load_encoder(TINY, "cpu").fingerprint == load_encoder(TINY, "cpu").fingerprint
    shutil.copy(model_store.BUILTIN_DIR / "clipdex-tiny.json", tmp_path)  # the card, without its weights
    monkeypatch.setattr(model_store, "BUILTIN_DIR", tmp_path)
    with pytest.raises(ModelNotAvailable, match="python -m retrieval.demo.train_tiny"):
        load_encoder(TINY, "cpu")


def _world_split(tiny: Encoder) -> tuple[PairData, PairData]:
    data = from_scenes(world.make_scenes(24, 3, world.NEW), tiny.input_spec)
    return split_by_image(data, 0.25, seed=0)


def _copy(model: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(model).float()
