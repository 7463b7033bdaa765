"""Soak test: SIGKILL a real `clipdex index` at 200 seeded random moments.

    PYTHONPATH=. python benchmarks/soak_kill.py [--trials 200] [--seed 1] [--work DIR]

Each trial kills a run (an empty library being indexed, or an indexed one being
brought up to date with deletions, moves, edits and new photos), reopens the
library and checks it (integrity_check, FAISS ids == committed vectors, no
duplicates, no temp files), then resumes and compares with an uninterrupted run.
Prints trials passed, the files re-encoded on resume (and whether any committed
file was encoded twice), and the recovery time after a kill.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from crash_harness import Harness, TrialResult  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1, help="first trial seed; trial i uses seed+i")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp dir)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    work = args.work or Path(tempfile.mkdtemp(prefix="clipdex-soak-"))
    started = time.monotonic()
    harness = Harness(work)
    print(
        f"corpus {len(harness.expected.items)} files; uninterrupted runs: "
        + ", ".join(f"{k} {v:.2f}s" for k, v in harness.expected.seconds.items()),
        flush=True,
    )
    results: list[TrialResult] = []
    for i in range(args.trials):
        r = harness.trial(args.seed + i)
        results.append(r)
        status = "ok  " if r.passed else "FAIL"
        print(
            f"{status} seed {r.seed:4d} {r.scenario:6s} {r.how:20s} exit {r.exit_code!s:>3} "
            f"committed {r.committed:2d} re-encoded {r.encoded_on_resume:2d} recovery {r.recovery_s:.3f}s"
            + ("" if r.passed else "  " + "; ".join(r.problems)),
            flush=True,
        )
    report(results, time.monotonic() - started)
    return 0 if all(r.passed for r in results) else 1


def report(results: list[TrialResult], seconds: float) -> None:
    passed = sum(r.passed for r in results)
    killed = [r for r in results if r.exit_code == -9]
    encoded = [r.encoded_on_resume for r in results]
    extra = sum(max(0, r.encoded_on_resume - r.expected_on_resume) for r in results)
    recovery = sorted(r.recovery_s for r in results)
    outcomes = Counter("killed" if r.exit_code == -9 else f"exit {r.exit_code}" for r in results)
    print()
    print(f"trials passed            {passed}/{len(results)}")
    print(f"outcomes                 {dict(outcomes)}  (a run that finished before its kill moment exits 0)")
    print(f"killed mid-indexing      {sum(1 for r in killed if 0 < r.committed)} of {len(killed)} kills had committed vectors")
    print(f"re-encoded on resume     total {sum(encoded)}, mean {statistics.mean(encoded):.2f}, max {max(encoded)} files")
    print(f"encoded twice            {extra} files (committed before the kill but encoded again)")
    print(
        f"recovery after a kill    median {statistics.median(recovery):.3f}s, "
        f"p95 {recovery[int(0.95 * (len(recovery) - 1))]:.3f}s, max {recovery[-1]:.3f}s"
        " (reopen, WAL recovery, FAISS catch-up)"
    )
    print(f"wall time                {seconds:.0f}s")
    print("reproduce: PYTHONPATH=. python benchmarks/soak_kill.py --trials", len(results))


if __name__ == "__main__":
    sys.exit(main())
