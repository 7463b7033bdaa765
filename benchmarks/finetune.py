"""Fine-tuning benchmark: do the defaults (`--lr auto`, patience, time budget, `--keep-base`) match hand-tuning?

    PYTHONPATH=. python benchmarks/finetune.py [--budget 40] [--domains textures,counting,layouts]

For each generated domain the shipped clipdex-tiny never saw (retrieval/demo/domains.py:
600 training pairs on 300 pictures, 56 validation captions on 28 pictures, as the
issue's user had), it fine-tunes once with every default and once per learning rate of
a fixed grid (1e-5 … 1e-3 in half-decades, every other option at its default), each
within the same time budget, and prints text→image R@1 on 200 held-out pictures of
the domain, retention on 200 held-out scenes of the world the model was trained on
(retrieval/demo/world.py BASE; R@1 over the base model's), and wall time. `--keep-base`
picks its α on other base-world scenes (world.reference_for), never on these.
Times are wall clock on whatever machine runs it; on a shared machine they vary.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from indexer.models import TINY_MODEL, Encoder, ModelSpec, load_encoder  # noqa: E402
from retrieval.demo import world  # noqa: E402
from retrieval.demo.domains import DOMAINS  # noqa: E402
from retrieval.evaluate import evaluate  # noqa: E402
from retrieval.finetune import finetune  # noqa: E402
from retrieval.trainer import TrainConfig  # noqa: E402

GRID = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3)
TARGET = 0.05  # the defaults must come within this much R@1 of the best grid setting


def main() -> int:
    parser = argparse.ArgumentParser(description="defaults against a grid of learning rates, per domain")
    parser.add_argument("--budget", type=float, default=40.0, help="seconds of training per run (the range test of the defaults is not counted)")
    parser.add_argument("--domains", default=",".join(DOMAINS))
    args = parser.parse_args()
    base = load_encoder(ModelSpec.parse(TINY_MODEL), "cpu")
    old = world.from_scenes(world.make_scenes(200, 31, world.BASE, split="test"), base.input_spec)
    old_r1 = evaluate(base, old).text_to_image.recall[0]
    lines = []
    for name in args.domains.split(","):
        domain = DOMAINS[name]
        train, val, test = (domain.pairs(n, seed, base.input_spec) for n, seed in ((300, 0), (28, 1), (200, 2)))
        rows = [("base (no training)", evaluate(base, test).text_to_image.recall[0], 1.0, 0.0, "")]
        config = TrainConfig(time_budget_s=args.budget)
        for label, cfg in [("defaults (--lr auto)", config)] + [(f"--lr {lr:g}", replace(config, lr=lr)) for lr in GRID]:
            rows.append(_run(base, train, val, test, old, old_r1, label, cfg))
            _log(f"{name}: {label}: new R@1 {rows[-1][1]:.3f}  retention {rows[-1][2]:.0%}  {rows[-1][3]:.0f} s  {rows[-1][4]}")
        lines += _table(name, rows)
    print(f"clipdex-tiny; per run a {args.budget:g} s budget; base-world R@1 of the base model {old_r1:.3f}")
    print("\n".join(lines))
    return 0


def _run(base: Encoder, train, val, test, old, old_r1: float, label: str, config: TrainConfig):  # type: ignore[no-untyped-def]
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        result = finetune(base, train, val, config, Path(tmp) / "m.safetensors", reference=world.reference_for(base.arch, base.input_spec))
        tuned = load_encoder(result.spec, "cpu")
    seconds = time.monotonic() - started
    new_r1 = evaluate(tuned, test).text_to_image.recall[0]
    kept = evaluate(tuned, old).text_to_image.recall[0] / old_r1
    card = result.card
    how = f"lr {card['hyperparameters']['lr'] or card['lr_search']['lr']:.1e}, {card['training']['steps']} steps, " \
          f"stopped by {card['training']['stopped_by']}, α {card['keep_base']['alpha'] if card['keep_base'] else '-'}"
    return label, new_r1, kept, seconds, how


def _table(name: str, rows: list) -> list[str]:  # type: ignore[type-arg]
    out = [f"\n{name}", f"{'setting':<22}{'new R@1':>9}{'retention':>11}{'wall s':>8}  run"]
    out += [f"{label:<22}{r1:>9.3f}{kept:>10.0%}{s:>8.0f}  {how}" for label, r1, kept, s, how in rows]
    grid = rows[2:]
    best = max(grid, key=lambda r: r[1])
    gap = best[1] - rows[1][1]
    verdict = "met" if gap <= TARGET else "MISSED"
    out.append(f"defaults {rows[1][1]:.3f} vs best grid {best[0]} {best[1]:.3f}: gap {gap:+.3f} (target ≤ {TARGET}) {verdict}")
    return out


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
