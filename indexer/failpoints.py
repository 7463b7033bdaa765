"""Named crash points for fault-injection tests: `CLIPDEX_FAILPOINT=name[:count]`.

When the variable names a point, the process SIGKILLs itself the `count`-th time
(default: the first time) execution reaches that point, exactly as a power cut or
the OOM killer would stop it: no `finally`, no atexit, no flush. Unset, a point
costs one comparison. The variable is read on the first hit, so a process forked
from one that imported this module still sees its own environment; decoder
workers, fresh processes, read it for their own point.

In-process tests can instead `arm` a point with an error to raise there (say
OSError(ENOSPC), a disk that fills up) rather than a kill, and `disarm` it.
"""

from __future__ import annotations

import os
import signal

ENV = "CLIPDEX_FAILPOINT"

# Every point the code calls, so a test can run each one and a typo fails loudly.
CATALOG_MID_BATCH = "catalog.mid_batch"  # half of a write batch's rows inserted, transaction open
CATALOG_BEFORE_COMMIT = "catalog.before_commit"  # every row of the batch written, not committed
CATALOG_AFTER_COMMIT = "catalog.after_commit"  # the batch committed
INDEX_AFTER_TEMP_WRITE = "index.after_temp_write"  # temp file written and fsynced, not renamed
INDEX_AFTER_REPLACE = "index.after_replace"  # renamed into place, directory not yet fsynced
POINTS = (CATALOG_MID_BATCH, CATALOG_BEFORE_COMMIT, CATALOG_AFTER_COMMIT, INDEX_AFTER_TEMP_WRITE, INDEX_AFTER_REPLACE)
# Points in decoder worker processes (tests/test_worker_isolation.py runs them): killing one
# is a codec crashing, not the indexing process dying, so tests/test_crash.py does not.
DECODER_BEFORE_DECODE = "decoder.before_decode"  # a worker took its next file, not yet opened
RAY_BEFORE_DECODE = "ray.before_decode"  # a Ray decode task took its next file (tests/test_ray_executor.py)
WORKER_POINTS = (DECODER_BEFORE_DECODE, RAY_BEFORE_DECODE)
# Points that change a result instead of stopping the process: `perturbs(name)` is true while armed.
FAST_PATH_NOISE = "encode.fast_path_noise"  # the reduced-precision image encoder's vectors get noise added
INT8_PATH_NOISE = "encode.int8_path_noise"  # the same, for the int8 image encoder only (auto's next choice is measured)
PERTURB_POINTS = (FAST_PATH_NOISE, INT8_PATH_NOISE)

_UNREAD = object()
_armed: object = _UNREAD  # _UNREAD, None (disarmed) or the armed point's name
_remaining = 0
_error: BaseException | None = None  # raised at the point instead of the kill


class FailpointError(ValueError):
    """CLIPDEX_FAILPOINT names no known point or has a bad count."""


def hit(name: str) -> None:
    """Kill this process with SIGKILL if `name` is armed and its count is reached
    (or raise the error it was armed with: from then on at every hit, until disarmed)."""
    global _remaining
    if _armed is None:
        return
    if _armed is _UNREAD:
        _arm_from_env()
    if _armed != name:
        return
    _remaining -= 1
    if _remaining > 0:
        return
    if _error is not None:
        raise _error
    os.kill(os.getpid(), signal.SIGKILL)


def perturbs(name: str) -> bool:
    """True while `name` (one of PERTURB_POINTS) is armed, by `arm` or CLIPDEX_FAILPOINT; never kills or raises."""
    if _armed is _UNREAD:
        _arm_from_env()
    return _armed == name


def arm(name: str, count: int = 1, error: BaseException | None = None) -> None:
    """Arm `name` in this process, ignoring CLIPDEX_FAILPOINT: at its `count`-th hit it raises
    `error`, or kills the process when there is none. Raises FailpointError for an unknown point."""
    global _armed, _remaining, _error
    _armed, _remaining = parse(f"{name}:{count}")
    _error = error


def disarm() -> None:
    """Undo `arm`: CLIPDEX_FAILPOINT is read again on the next hit."""
    global _armed, _error
    _armed, _error = _UNREAD, None


def parse(spec: str) -> tuple[str, int]:
    """`name` or `name:count` as (name, count); raise FailpointError for anything else."""
    name, _, count = spec.strip().partition(":")
    known = POINTS + WORKER_POINTS + PERTURB_POINTS
    if name not in known:
        raise FailpointError(f"{ENV}={spec!r}: unknown point; known points: {', '.join(known)}")
    if count and not (count.isdigit() and int(count) >= 1):
        raise FailpointError(f"{ENV}={spec!r}: the count after ':' must be a whole number of at least 1")
    return name, int(count) if count else 1


def _arm_from_env() -> None:
    global _armed, _remaining
    spec = os.environ.get(ENV, "")
    if not spec:
        _armed = None
        return
    _armed, _remaining = parse(spec)
