"""`clipdex finetune --resume`: a run stopped by Ctrl-C continues from its checkpoint and ends as if never stopped."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from pathlib import Path

import torch
from typer.testing import CliRunner

from cli.app import app
from retrieval.demo import world

runner = CliRunner()
STEPS, EVERY = 16, 4  # checkpoints and validations every 4 steps


def _interrupt_when(path: Path, stop: threading.Event) -> None:
    """Send this process SIGINT (a user's Ctrl-C) once `path` exists."""
    while not stop.is_set():
        if path.exists():
            os.kill(os.getpid(), signal.SIGINT)
            return
        time.sleep(0.002)


def _validated_steps(stderr: str) -> list[int]:
    return [int(s) for s in re.findall(rf"step (\d+)/{STEPS} .*val R@1", stderr)]


def test_resume_after_ctrl_c_continues_at_the_checkpoint_and_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    csv_path = world.write_world(tmp_path / "w", world.make_scenes(12, 9, world.NEW), size=64)
    # A given rate, no time budget and no keep-base: the run is a function of its steps alone.
    common = ["finetune", str(csv_path), "--model", "clipdex-tiny", "--lr", "5e-4", "--batch-size", "4", "--max-steps",
              str(STEPS), "--checkpoint-every", str(EVERY), "--eval-every", str(EVERY), "--time-budget", "0",
              "--keep-base", "0", "--patience", "0", "--json"]  # fmt: skip
    whole = runner.invoke(app, [*common, "--out", str(tmp_path / "whole.safetensors")])
    assert whole.exit_code == 0, whole.output
    assert _validated_steps(whole.stderr) == [4, 8, 12, 16]

    out = tmp_path / "m.safetensors"
    checkpoint = tmp_path / "m.resume.pt"
    stop = threading.Event()
    watcher = threading.Thread(target=_interrupt_when, args=(checkpoint, stop), daemon=True)
    watcher.start()
    try:
        stopped = runner.invoke(app, [*common, "--out", str(out)])
    finally:
        stop.set()
        watcher.join()
    assert stopped.exit_code != 0 and not out.exists(), stopped.output  # Ctrl-C before the end
    saved_at = int(torch.load(checkpoint, weights_only=True)["counters"][0])
    assert saved_at in (4, 8, 12) and _validated_steps(stopped.stderr)[-1] >= saved_at

    resumed = runner.invoke(app, [*common, "--out", str(out), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert _validated_steps(resumed.stderr) == list(range(saved_at + EVERY, STEPS + 1, EVERY))  # nothing ran again
    assert not checkpoint.exists()
    card, reference = json.loads(resumed.stdout), json.loads(whole.stdout)
    assert card["training"]["steps"] == STEPS and card["training"]["validation"] == reference["training"]["validation"]
    assert card["fingerprint"] == reference["fingerprint"]  # the same weights, bit for bit
    assert card["rehearsal"]["share"] == 0.25  # rehearsal (on by default) resumes with the same batches too
    assert card["metrics"] == reference["metrics"]
