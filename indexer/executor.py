"""The executor interface: the one seam between the indexing loop and the engine that embeds.

`indexer.pipeline` plans from the catalog what needs vectors, hands the inputs to an
`Executor`, and commits what it yields. An executor only turns inputs into vectors:

    for results in executor.embed(tasks, models):   # batches, as they finish
        ...                                          # the caller commits them

Each task is an image path or a text with the caller's key; each model is a spec plus
the fingerprint its vectors must come from (the executor loads or rebuilds the model
and refuses one whose weights differ). Failures come back as values. How and where
the work runs (worker processes, devices, batch sizes, a cluster) is the business of
the executor's constructor, never of this interface: `indexer.local_executor` is the
default, and another engine is another class with the same `embed`.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator, Protocol, Sequence

import numpy as np

from indexer.decode import ImageInfo
from indexer.errors import ModelNotAvailable
from indexer.items import IMAGE
from indexer.model_spec import ModelSpec

if TYPE_CHECKING:  # torch: an executor module is imported by callers that never encode
    from indexer.models import Encoder


@dataclass(frozen=True)
class EmbedTask:
    """One input: an image file (kind IMAGE, `value` its path) or a text (kind TEXT)."""

    key: int  # the caller's, returned unchanged on the result
    value: bytes | str
    kind: str = IMAGE


@dataclass(frozen=True)
class ModelRef:
    """A model to embed with, as data: how to load it, and the fingerprint it must have."""

    spec: ModelSpec
    fingerprint: str


@dataclass(frozen=True)
class Failure:
    """Why an input has no vectors. A transient failure lies with the worker (a crash, a
    hang, running out of memory), not the input: the next run tries it again."""

    reason: str
    is_transient: bool = False


@dataclass
class EmbedResult:
    """One task's outcome: a vector per model fingerprint that embedded it, the failures
    of the others, and an image's metadata (for the catalog) once it decoded."""

    key: int
    vectors: dict[str, np.ndarray] = field(default_factory=dict)  # fingerprint -> (D,) float32 unit vector
    failures: list[Failure] = field(default_factory=list)
    info: ImageInfo | None = None


class Executor(Protocol):
    """Embeds inputs with models, yielding results in batches as they finish."""

    # Wall seconds spent per stage so far (e.g. wait_decode, encode), added into the run's report.
    timings: dict[str, float]

    def embed(self, tasks: Sequence[EmbedTask], models: Sequence[ModelRef]) -> Iterator[list[EmbedResult]]:
        """Every task's result exactly once, in batches (any order). Raises ModelNotAvailable
        when a model does not load with the fingerprint asked for, before any work starts."""
        ...


def check_fingerprint(encoder: Encoder, model: ModelRef) -> Encoder:
    """`encoder` when it is the model asked for; raises ModelNotAvailable when its weights differ."""
    if encoder.fingerprint != model.fingerprint:
        raise ModelNotAvailable(
            f"{model.spec.label} now loads as {encoder.fingerprint}, not {model.fingerprint} "
            "whose vectors the library holds; restore the original weights, or index with another model"
        )
    return encoder


class StageClock:
    """Adds wall time per stage into a timings dict (what `IndexReport.timings` and the benchmarks show)."""

    def __init__(self, timings: dict[str, float]) -> None:
        self.timings = timings

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - t0
