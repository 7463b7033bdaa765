"""The defaults that replace hand-tuning: `--lr auto`, patience with best-weights restore, `--time-budget`, `--keep-base`."""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cli.app import app
from conftest import QUICK_TRAIN as QUICK
from indexer.models import Encoder
from retrieval.demo import world
from retrieval.finetune import ALPHAS, keep_base, wise_ft
from retrieval.lr_finder import LrRange, find_lr, pick_lr
from retrieval.pair_data import PairData, split_by_image
from retrieval.run_chart import run_chart
from retrieval.trainer import TrainConfig, train

runner = CliRunner()


@pytest.fixture(scope="module")
def split(tiny: Encoder) -> tuple[PairData, PairData]:
    return split_by_image(world.from_scenes(world.make_scenes(24, 8, world.NEW), tiny.input_spec), 0.25, seed=0)


def test_rule_takes_the_rate_60_percent_down_stops_at_divergence_and_clamps() -> None:
    rates = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1]
    family = LrRange(1e-5, 1e-1, "test")
    chosen, rule, curve = pick_lr(rates, [8.0, 8.0, 2.0, 1.0, 1e9], family)
    # EMA β 0.7, bias-corrected: 8, 8, 5.26, 3.578; the last diverged and is dropped
    assert [round(loss, 3) for _, loss in curve] == [8.0, 8.0, 5.26, 3.578]
    # start 8 (the first decade: 1e-5 alone), lowest 3.578: 60% of the way down, 5.347, is crossed between 1e-4 and 1e-3
    level = 8.0 - 0.6 * (8.0 - curve[3][1])
    assert chosen == rule == pytest.approx(10 ** (-4 + (8.0 - level) / (8.0 - curve[2][1])))
    assert round(rule, 7) == 9.297e-4
    assert pick_lr(rates, [8.0, 8.0, 2.0, 1.0, 1e9], LrRange(1e-5, 1e-4, "test"))[:2] == (1e-4, rule)
    assert pick_lr(rates, [1.0, 2.0, 3.0, 4.0, 5.0], family)[0] == 1e-5  # only rising: the smallest rate
    assert pick_lr(rates, [math.nan] * 5, family)[:2] == (1e-5, 1e-5)


def test_rule_reads_an_s_shaped_fall_through_batch_noise() -> None:
    family = LrRange(1e-4, 1e-3, "test")
    sweep = [1e-5 * 10 ** (i / 4.75) for i in range(20)]  # 1e-5 … 1e-1, as clipdex-tiny's sweep
    clean = [3.0 + 6.0 / (1 + (r / 3e-4) ** 2) for r in sweep]  # falls from 9 to 3, steepest at 3e-4
    noisy = [loss + (0.6 if i % 2 else -0.6) for i, loss in enumerate(clean)]
    picks = [pick_lr(sweep, losses, family)[1] for losses in (clean, noisy, noisy[1:2] + noisy[1:])]
    # 60% of the fall is at 3.7e-4 on the clean curve; the smoothing lags it by about 0.4 decade, and the pick sits there
    assert all(9e-4 < p < 1.1e-3 for p in picks), picks
    assert max(picks) / min(picks) < 1.3


def test_range_test_runs_on_a_copy_and_reports_its_curve(tiny: Encoder, split: tuple[PairData, PairData]) -> None:
    before = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    search = find_lr(tiny, split[0], QUICK, steps=6)
    assert all(torch.equal(v, tiny.model.state_dict()[k]) for k, v in before.items())
    assert search.range == LrRange(1e-4, 1e-3, search.range.source) and 1e-4 <= search.lr <= 1e-3
    assert 1 <= len(search.curve) <= 6 and search.curve[0][0] == pytest.approx(1e-5)
    card = search.to_dict()
    assert card["lr"] == search.lr and len(card["curve"]) == len(search.curve)  # type: ignore[arg-type]
    assert search.summary().startswith(f"learning rate {search.lr:.1e} (range test: loss")
    # three tests on other batches; the median of their rates is the one taken, with its curve
    assert len(search.repeats) == 3 and list(search.repeats) == sorted(search.repeats)
    assert search.rule_lr == search.repeats[1] and "median of 3 tests" in search.summary()
    assert card["repeats"] == [float(f"{lr:.3g}") for lr in search.repeats]


def test_patience_stops_and_the_best_validated_weights_come_back(tiny: Encoder, split: tuple[PairData, PairData]) -> None:
    scores = iter([0.1, 0.5, 0.3, 0.4, 0.2, 0.9])
    seen: list[dict[str, torch.Tensor]] = []

    def score(net: torch.nn.Module) -> float:
        seen.append({k: v.detach().clone() for k, v in net.state_dict().items()})
        return next(scores)

    config = TrainConfig(**{**QUICK.__dict__, "patience": 3, "eval_every": 1, "max_steps": 20})
    out = train(tiny, split[0], split[1], config, score_fn=score)
    assert (out.steps, out.best_step, out.stopped_by, out.stopped_early) == (5, 2, "patience", True)
    assert out.history == [(1, 0.1), (2, 0.5), (3, 0.3), (4, 0.4), (5, 0.2)]
    assert all(torch.equal(out.model.state_dict()[k], v) for k, v in seen[1].items())
    assert not all(torch.equal(out.model.state_dict()[k], v) for k, v in seen[4].items())


def test_a_spent_time_budget_stops_after_one_validated_step(tiny: Encoder, split: tuple[PairData, PairData]) -> None:
    out = train(tiny, split[0], split[1], TrainConfig(**{**QUICK.__dict__, "max_steps": 50}), deadline=time.monotonic() - 1)
    assert (out.steps, out.stopped_by, [s for s, _ in out.history]) == (1, "time budget", [1])


def test_keep_base_takes_the_largest_alpha_that_keeps_enough(tiny: Encoder) -> None:
    reference = world.from_scenes(world.make_scenes(40, 12, world.BASE, split="test"), tiny.input_spec)
    damaged = copy.deepcopy(tiny.model).float()
    with torch.no_grad():
        for p in damaged.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.05)
    kept = keep_base(tiny, damaged, reference, 0.9)
    alphas = [c["alpha"] for c in kept["curve"]]
    assert alphas == list(ALPHAS[: len(alphas)]) and kept["alpha"] == alphas[-1]
    assert all(c["retention"] < 0.9 for c in kept["curve"][:-1])
    assert kept["retention"] >= 0.9 or kept["alpha"] == ALPHAS[-1]
    from retrieval.evaluate import evaluate

    mixed = copy.deepcopy(damaged)
    mixed.load_state_dict(wise_ft(tiny.model.state_dict(), damaged.state_dict(), kept["alpha"]))
    r1 = evaluate(tiny, reference, model=mixed).text_to_image.recall[0]
    assert round(r1 / kept["base_r1"], 4) == pytest.approx(kept["retention"], abs=1e-3)


def test_chart_draws_both_curves_and_says_when_one_is_missing() -> None:
    card = {
        "lr_search": {"lr": 3e-4, "curve": [{"lr": 1e-5, "loss": 9.0}, {"lr": 1e-3, "loss": 5.0}]},
        "training": {"best_step": 20, "validation": [{"step": 10, "score": 0.2}, {"step": 20, "score": 0.4}]},
    }
    svg = run_chart(card)
    assert svg.startswith("<svg ") and svg.count("<polyline") == 2 and svg.count("stroke-dasharray") == 2
    assert 'points="50.0,40.0 310.0,200.0"' in svg  # loss 9 (top) → 5 (bottom) over log10 rate -5 → -3
    assert "not recorded" in run_chart({"training": card["training"]})


def test_cli_defaults_pick_the_rate_keep_the_base_and_draw_the_chart(tmp_path: Path) -> None:
    csv_path = world.write_world(tmp_path / "w", world.make_scenes(24, 9, world.NEW), size=64)
    out = tmp_path / "m" / "tuned.safetensors"
    run = runner.invoke(app, ["finetune", str(csv_path), "--model", "clipdex-tiny", "--out", str(out), "--json",
                              "--lr", "auto", "--time-budget", "300", "--keep-base", "0.9", "--max-steps", "3",
                              "--batch-size", "8", "--accum-steps", "2", "--lock-text", "--val-fraction", "0.25"])  # fmt: skip
    assert run.exit_code == 0, run.output
    card = json.loads(run.stdout)
    assert card == json.loads(out.with_suffix(".json").read_text())
    search, kept = card["lr_search"], card["keep_base"]
    assert 1e-4 <= search["lr"] <= 1e-3 and search["range"] == [1e-4, 1e-3] and len(search["curve"]) >= 2
    assert card["hyperparameters"]["lr"] == search["lr"] and card["hyperparameters"]["accum_steps"] == 2
    assert card["hyperparameters"]["lock_text"] is True and card["hyperparameters"]["time_budget_s"] == 300
    assert kept["alpha"] in ALPHAS and kept["pairs"] == 400 and card["training"]["stopped_by"] == "step cap"
    assert f"learning rate {search['lr']:.1e} (range test" in run.stderr and "wise-ft α" in run.stderr
    assert out.with_suffix(".svg").read_text().count("<polyline") == 2


def test_cli_time_budget_wise_ft_lora_lock_image_and_resume(tmp_path: Path) -> None:
    csv_path = world.write_world(tmp_path / "w", world.make_scenes(16, 9, world.NEW), size=64)
    out = tmp_path / "m.safetensors"
    common = ["finetune", str(csv_path), "--model", "clipdex-tiny", "--out", str(out), "--lr", "5e-4", "--batch-size", "8"]
    run = runner.invoke(app, [*common, "--time-budget", "0.001", "--wise-ft", "0.5", "--lora-rank", "2", "--lock-image",
                              "--max-steps", "40", "--json"])  # fmt: skip
    assert run.exit_code == 0, run.output
    card = json.loads(run.stdout)
    assert (card["training"]["steps"], card["training"]["stopped_by"]) == (1, "time budget")
    assert card["lr_search"] is None and card["keep_base"] is None  # a given rate; an explicit --wise-ft wins
    assert (card["hyperparameters"]["wise_ft"], card["hyperparameters"]["lora_rank"]) == (0.5, 2)
    resumed = runner.invoke(app, [*common, "--resume"])
    assert resumed.exit_code == 1 and "--resume" in resumed.stderr and "m.resume.pt" in resumed.stderr
    bad = runner.invoke(app, [*common[:-4], "--lr", "fast"])
    assert bad.exit_code == 2 and "'fast' is neither a number nor auto" in bad.output
