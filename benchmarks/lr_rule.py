"""Where should `--lr auto` aim? R@1 against the learning rate, and where each reading of the range test lands.

    PYTHONPATH=. python benchmarks/lr_rule.py                          # every draw, about 25 minutes on one core
    PYTHONPATH=. python benchmarks/lr_rule.py --draws 10,20 --out a.jsonl    # half of it, and the other half beside it:
    PYTHONPATH=. python benchmarks/lr_rule.py --draws 30,40 --out b.jsonl
    PYTHONPATH=. python benchmarks/lr_rule.py --report a.jsonl b.jsonl       # the tables from both halves

Part 1 fine-tunes clipdex-tiny on each generated domain (retrieval/demo/domains.py) of
each draw of its pictures (`--draws`, the data seeds of benchmarks/finetune.py) at
fixed rates (`--rates`, one training seed each), exactly as benchmarks/finetune.py runs
a grid setting (every other default on: rehearsal, patience, --keep-base; 250 steps of
16 pairs), and prints new-domain R@1 after --keep-base. Part 2 runs the range test
(retrieval/lr_finder.py) `--batch-seeds` times per domain and draw, on the same
training pictures, and reads each curve at several depths (the share of the way down
from its start level to its lowest): where the rule would aim at each depth, alone and
as the median of three tests. Part 3 scores each reading against part 1: the R@1 at its
pick, interpolated in log rate between the measured rates, less the best of the grid
rates 1e-4, 3e-4 and 1e-3 (a positive gap is a loss). One seed a rate: a single run's
R@1 moves by several hundredths, so read the pattern, not the second decimal.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

GRID = (1e-4, 3e-4, 1e-3)  # the benchmark grid's rates that learn these domains at all
DEPTHS = (0.5, 0.55, 0.6, 0.65, 0.7)


def measure(draws: list[int], rates: list[float], batch_seeds: int, out: Path | None) -> list[dict]:
    import torch

    import finetune as bench
    from indexer.models import TINY_MODEL, ModelSpec, load_encoder
    from retrieval import lr_finder
    from retrieval.demo import world
    from retrieval.demo.domains import DOMAINS
    from retrieval.trainer import TrainConfig

    torch.set_num_threads(1)
    base = load_encoder(ModelSpec.parse(TINY_MODEL), "cpu")
    old = world.from_scenes(world.make_scenes(200, 31, world.BASE, split="test"), base.input_spec)
    old_r1 = bench.evaluate(base, old).text_to_image.recall[0]
    reference = world.reference_for(base.arch, base.input_spec)
    rehearsal = world.rehearsal_for(base.arch, base.input_spec)
    assert reference is not None and rehearsal is not None
    # benchmarks/finetune.py's budget: 250 steps, with the time budget far away (a backstop only)
    config = TrainConfig(time_budget_s=3000, max_steps=250, batch_size=16)
    family = lr_finder.range_for(base.arch)
    rows: list[dict] = []
    sink = open(out, "a") if out else None

    def keep(row: dict) -> None:
        rows.append(row)
        print(json.dumps(row), file=sink or sys.stderr, flush=True)

    for draw in draws:
        for name, domain in DOMAINS.items():
            train_d, val, test = [domain.pairs(n, draw + s, base.input_spec) for n, s in ((300, 0), (28, 1), (200, 2))]
            subset = train_d.subset(list(range(min(train_d.images, lr_finder.LR_TEST_IMAGES))))
            for seed in range(batch_seeds):
                _, rule, curve = lr_finder._range_test(base, subset, config, family, lr_finder.LR_TEST_STEPS, seed)
                keep({"draw": draw, "domain": name, "seed": seed, "rule_lr": rule, "curve": curve})
            for lr in rates:
                r = bench._run(base, train_d, val, test, old, old_r1, reference, rehearsal, replace(config, lr=lr, seed=0))
                keep({"draw": draw, "domain": name, "lr": lr, "r1": r[0], "r1_raw": r[2], "alpha": r[7], "steps": r[8]})
    if sink:
        sink.close()
    return rows


def read_at(curve: list[list[float]], depth: float) -> float:
    """The rate where a smoothed curve has come `depth` of the way down (lr_finder.pick_lr's reading), clamped to tiny's range."""
    from retrieval.lr_finder import LR_RANGES

    rates, losses = [p[0] for p in curve], [p[1] for p in curve]
    start, lowest = float(np.mean([v for r, v in zip(rates, losses) if r < rates[0] * 10])), min(losses)
    level = start - depth * (start - lowest)
    i = next(i for i, v in enumerate(losses) if v <= level)
    rule = rates[0]
    if i > 0:
        t = (losses[i - 1] - level) / (losses[i - 1] - losses[i]) if losses[i - 1] > losses[i] else 1.0
        rule = 10 ** (math.log10(rates[i - 1]) + t * (math.log10(rates[i]) - math.log10(rates[i - 1])))
    tiny = LR_RANGES["clipdex-tiny"]
    return min(max(rule, tiny.low), tiny.high)


def at(r1: dict[float, float], lr: float) -> float:
    xs = sorted(r1)
    return float(np.interp(math.log10(lr), [math.log10(x) for x in xs], [r1[x] for x in xs]))


def report(rows: list[dict]) -> None:
    from cpu_info import cpu

    r1: dict[tuple[int, str], dict[float, float]] = {}
    curves: dict[tuple[int, str], list[list[list[float]]]] = {}
    for row in rows:
        key = (row["draw"], row["domain"])
        if "curve" in row:
            curves.setdefault(key, []).append(row["curve"])
        else:
            r1.setdefault(key, {})[row["lr"]] = row["r1"]
    cases = sorted(k for k in r1 if all(g in r1[k] for g in GRID))
    rates = sorted({lr for k in cases for lr in r1[k]})
    print(f"lr_rule: clipdex-tiny, {len(cases)} domain draws; {cpu()}")
    print("\nPart 1: new-domain R@1 after --keep-base, one training seed, 250 steps of 16 pairs")
    print(f"{'draw':>4} {'domain':<9}" + "".join(f"{lr:>9.1e}" for lr in rates) + "  gap of each rate to the best of 1e-4/3e-4/1e-3")
    for k in cases:
        best = max(r1[k][g] for g in GRID)
        print(f"{k[0]:>4} {k[1]:<9}" + "".join(f"{r1[k].get(lr, math.nan):>9.3f}" for lr in rates) + "  "
              + " ".join(f"{best - r1[k][lr]:+.3f}" for lr in rates if lr in r1[k]))  # fmt: skip
    for lr in rates:
        gaps = [max(r1[k][g] for g in GRID) - r1[k][lr] for k in cases if lr in r1[k]]
        within = sum(g <= 0.05 for g in gaps)
        print(f"fixed {lr:.1e}: within 0.05 of the grid's best in {within} of {len(gaps)}; worst gap {max(gaps):+.3f}, mean {np.mean(gaps):+.3f}")
    tested = [k for k in curves if k in r1]
    n_tests = sum(len(curves[k]) for k in tested)
    print(f"\nPart 2-3: the range test read at each depth ({n_tests} tests on {len(tested)} domain draws); "
          "gap = best grid R@1 less R@1 interpolated at the pick")
    print(f"{'depth':>6}{'picks p5':>10}{'median':>9}{'p95':>9}{'worst spread':>14}{'gap mean':>10}{'worst':>8}"
          f"{'median of 3: gap mean':>23}{'worst':>8}")
    for depth in DEPTHS:
        picks = {k: [read_at(c, depth) for c in curves[k]] for k in tested}
        every = [p for k in tested for p in picks[k]]
        spread = max(max(p) / min(p) for p in picks.values())
        gaps = [max(r1[k][g] for g in GRID) - at(r1[k], p) for k in tested if k in cases for p in picks[k]]
        med = [float(np.median(picks[k][i : i + 3])) for k in tested if k in cases for i in range(0, len(picks[k]) - 2, 3)]
        med_k = [k for k in tested if k in cases for i in range(0, len(picks[k]) - 2, 3)]
        med_gaps = [max(r1[k][g] for g in GRID) - at(r1[k], p) for k, p in zip(med_k, med)]
        print(f"{depth:>6.0%}{np.percentile(every, 5):>10.1e}{np.median(every):>9.1e}{np.percentile(every, 95):>9.1e}"
              f"{spread:>13.1f}x{np.mean(gaps):>+10.3f}{max(gaps):>+8.3f}{np.mean(med_gaps):>+23.3f}{max(med_gaps):>+8.3f}")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--draws", default="10,20,30,40", help="data seeds of the domains' pictures")
    parser.add_argument("--rates", default="1e-4,3e-4,5.5e-4,1e-3", help="fixed rates to fine-tune at")
    parser.add_argument("--batch-seeds", type=int, default=6, help="range tests per domain and draw")
    parser.add_argument("--out", type=Path, help="append the measurements here as JSON lines")
    parser.add_argument("--report", type=Path, nargs="+", help="print the tables from these JSON-lines files only")
    args = parser.parse_args()
    if args.report:
        report([json.loads(line) for f in args.report for line in f.read_text().splitlines() if line.strip()])
        return 0
    rows = measure([int(d) for d in args.draws.split(",")], [float(r) for r in args.rates.split(",")], args.batch_seeds, args.out)
    report(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
