"""Named crash points for fault-injection tests: `CLIPDEX_FAILPOINT=name[:count]`.

When the variable names a point, the process SIGKILLs itself the `count`-th time
(default: the first time) execution reaches that point, exactly as a power cut or
the OOM killer would stop it: no `finally`, no atexit, no flush. Unset, a point
costs one comparison. The variable is read on the first hit, so a process forked
from one that imported this module still sees its own environment.
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

_UNREAD = object()
_armed: object = _UNREAD  # _UNREAD, None (disarmed) or the armed point's name
_remaining = 0


class FailpointError(ValueError):
    """CLIPDEX_FAILPOINT names no known point or has a bad count."""


def hit(name: str) -> None:
    """Kill this process with SIGKILL if `name` is armed and its count is reached."""
    global _remaining
    if _armed is None:
        return
    if _armed is _UNREAD:
        _arm_from_env()
    if _armed != name:
        return
    _remaining -= 1
    if _remaining <= 0:
        os.kill(os.getpid(), signal.SIGKILL)


def parse(spec: str) -> tuple[str, int]:
    """`name` or `name:count` as (name, count); raise FailpointError for anything else."""
    name, _, count = spec.strip().partition(":")
    if name not in POINTS:
        raise FailpointError(f"{ENV}={spec!r}: unknown point; known points: {', '.join(POINTS)}")
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
