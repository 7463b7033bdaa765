"""The Ray executor: decoding as CPU tasks and encoding on an actor pool, on a Ray cluster.

The driver (the process that holds the catalog) plans and commits as with any executor;
this class only turns inputs into vectors, somewhere on the cluster:

- Files are decoded in chunks of `chunk` paths by CPU tasks (`_decode_chunk`) with
  clipdex's own decoder (HEIC included; not Ray Data's `read_images`, whose extension list
  is fixed). A task returns two objects: per file its metadata or failure (small: the
  driver reads it) and the decoded pixels, uint8 at the model's input size (never full
  images), which go from the task straight to an encoder actor without visiting the driver.
- Each model is loaded once per actor from its `ModelSpec` and checked by fingerprint
  before any work starts; actors take one GPU each when the cluster has GPUs.
- At most `in_flight` chunks are decoded or encoded at a time, so the object store holds a
  few megabytes and small chunks keep every CPU busy (large batches starve parallelism
  and spill the object store: Ray's known pitfalls). Each model has its own actors, so
  two models never queue behind one another on one GPU stage.
- Failures are values, as locally. A decode task whose worker dies (a crash, the node's
  memory monitor, a kill) is split and its files are retried one per task; a file that
  kills its worker twice in a row is a transient `Failure`, which the pipeline records as
  skipped and retries on later runs up to MAX_DECODE_TRIES, exactly as for local decoders.
  A task running past `timeout_s` per file is cancelled and treated the same way.
- Nodes may see the photos under another mount point: `path_map` rewrites the driver's
  paths (and a checkpoint's) before they reach the cluster (indexer.ray_plan, with the
  configuration and the actor plan).

`ray` is imported only here, when a RayExecutor is made: `pip install 'clipdex[ray]'`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np

from indexer.decode import DecodedImage, DecodeFailure, ImageInfo, InputSpec, decode_image
from indexer import failpoints
from indexer.errors import ExecutorUnavailable, ModelNotAvailable
from indexer.executor import EmbedResult, EmbedTask, Failure, ModelRef, StageClock
from indexer.items import IMAGE
from indexer.model_spec import ModelSpec
from indexer.ray_plan import RayConfig, map_path, mapped_spec, plan_actors

TEXT_BATCH = 256  # texts per encoder call, as locally
CRASHES_PER_FILE = 2  # worker deaths on one file (alone in its task) before it is a Failure
ENCODE_RETRIES = 3  # encoder actor deaths on one chunk before the run stops
DECODE_NICE = 19  # decode tasks' CPU priority, as indexer.workers gives local decoders


@dataclass
class _Chunk:
    """Up to `chunk` tasks on their way through decoding and encoding."""

    tasks: list[EmbedTask]
    crashes: int = 0  # worker deaths while it was decoded
    decodes: dict[InputSpec, tuple[Any, Any]] = field(default_factory=dict)  # spec -> (status ref, pixels ref)
    started: float = 0.0
    statuses: dict[InputSpec, list[ImageInfo | DecodeFailure]] = field(default_factory=dict)
    encodes: dict[str, tuple[Any, int]] = field(default_factory=dict)  # fingerprint -> (vectors ref, actor index)
    encode_tries: dict[str, int] = field(default_factory=dict)
    vectors: dict[str, np.ndarray] = field(default_factory=dict)  # fingerprint -> (n_ok, D)
    failure: Failure | None = None  # every file of the chunk failed with this


def _decode_chunk(
    paths: list[bytes | str], spec: InputSpec, max_pixels: int
) -> tuple[list[ImageInfo | DecodeFailure], np.ndarray]:
    """Decode on a Ray worker: per path its metadata or failure, and the decoded pixels (n_ok, H, W, 3)."""
    # At the lowest CPU priority, as local decoders: the encoder never waits for a core they hold.
    # (This worker process runs only this job's decode tasks: Ray does not share workers across jobs.)
    if os.nice(0) < DECODE_NICE:
        os.nice(DECODE_NICE - os.nice(0))
    statuses: list[ImageInfo | DecodeFailure] = []
    pixels = []
    for path in paths:
        failpoints.hit(failpoints.RAY_BEFORE_DECODE)
        try:
            out = decode_image(path, spec, max_pixels)
        except MemoryError:
            out = DecodeFailure("decoder ran out of memory")
        if isinstance(out, DecodedImage):
            statuses.append(out.info)
            pixels.append(out.pixels)
        else:
            statuses.append(out)
    stacked = np.stack(pixels) if pixels else np.zeros((0, spec.height, spec.width, 3), np.uint8)
    return statuses, stacked


class _EncoderActor:
    """One model on one Ray worker (a GPU when it was given one)."""

    def __init__(self, spec: ModelSpec, device: str, precision: str, home: str | None, threads: int) -> None:
        import torch

        from indexer.models import load_encoder

        if threads > 0:
            torch.set_num_threads(threads)
        self.encoder = load_encoder(spec, device, precision, home=None if home is None else _home(home))
        if self.encoder.precision == "int8":
            # int8 is the local executor's ONNX Runtime copy behind the fidelity guard; an actor encodes
            # with torch: at auto's next choice where that is bf16 (a CPU with native bf16), else fp32,
            # and it says which.
            from indexer.precision_guard import auto_cpu_candidates

            after = auto_cpu_candidates()[1:] if precision == "auto" and self.encoder.device.type == "cpu" else ()
            self.encoder.precision = "bf16" if "bf16" in after else "fp32"

    def describe(self) -> tuple[str, str, str, InputSpec]:
        """(fingerprint, device, precision, input spec)."""
        e = self.encoder
        return e.fingerprint, str(e.device), e.precision, e.input_spec

    def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        from indexer.encode import encode_images

        return encode_images(self.encoder, pixels)  # (B, D)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        from indexer.encode import encode_texts

        return encode_texts(self.encoder, texts)  # (B, D)


def _home(path: str) -> Any:
    from pathlib import Path

    return Path(path)


class _Pool:
    """The actors of one model, each with its count of calls in flight."""

    def __init__(self, make: Any, size: int) -> None:
        self.make = make
        self.actors = [make() for _ in range(size)]
        self.busy = [0] * size

    def least_busy(self) -> int:
        return min(range(len(self.actors)), key=lambda i: self.busy[i])

    def replace(self, index: int) -> None:
        self.actors[index] = self.make()
        self.busy[index] = 0


class RayExecutor:
    """Embeds on a Ray cluster (a local instance when `config.address` is None)."""

    def __init__(self, config: RayConfig = RayConfig()) -> None:
        try:
            import ray
        except ImportError as e:
            raise ExecutorUnavailable("ray", "clipdex[ray]") from e
        self.ray = ray
        self.config = config
        self.timings: dict[str, float] = {}
        self.devices: dict[str, str] = {}  # fingerprint -> "cuda:0 fp16, 2 actors"
        self._clock = StageClock(self.timings)
        self._pools: dict[str, _Pool] = {}
        self._started = False  # this executor started the Ray instance (and stops it)
        self._specs: dict[str, InputSpec] = {}  # fingerprint -> the input its model takes
        self._remote_decode: Any = None
        self._actor_class: Any = None
        # One image run's state: chunks not yet submitted (popped from the end), chunks in
        # flight, and each object ref waited on -> (its chunk, "decode"/"encode", spec/fingerprint).
        self._queue: list[_Chunk] = []
        self._active: list[_Chunk] = []
        self._waiting: dict[Any, tuple[_Chunk, str, Any]] = {}

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the actors, and the local Ray instance when this executor started it."""
        for pool in self._pools.values():
            for actor in pool.actors:
                self.ray.kill(actor)
        self._pools = {}
        if self._started:
            self.ray.shutdown()
            self._started = False

    # -- setup -----------------------------------------------------------------------------

    def _connect(self) -> None:
        ray, cfg = self.ray, self.config
        if not ray.is_initialized():
            if cfg.address is None:
                kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
                if cfg.num_cpus:
                    kwargs["num_cpus"] = cfg.num_cpus
                if cfg.object_store_mb:
                    kwargs["object_store_memory"] = cfg.object_store_mb * 1024 * 1024
                ray.init(**kwargs)
            else:
                ray.init(address=cfg.address, log_to_driver=False)
            self._started = True
        if self._remote_decode is None:
            env = {"runtime_env": {"env_vars": dict(cfg.worker_env)}} if cfg.worker_env else {}
            self._remote_decode = ray.remote(num_cpus=1, max_retries=0, num_returns=2, **env)(_decode_chunk)
            self._actor_class = ray.remote(**env)(_EncoderActor) if env else ray.remote(_EncoderActor)

    def _free_cpus(self) -> int:
        """CPUs no actor holds (the actors of another executor on the same cluster included)."""
        return int(self.ray.available_resources().get("CPU", 0))

    def _gpus(self) -> int:
        return int(self.ray.cluster_resources().get("GPU", 0))

    def _pool(self, model: ModelRef, n_models: int) -> _Pool:
        """The actors of `model`, started and checked by fingerprint. Raises ModelNotAvailable."""
        if model.fingerprint in self._pools:
            return self._pools[model.fingerprint]
        cfg = self.config
        spec = mapped_spec(model.spec, cfg.path_map)
        home = None if cfg.home is None else os.fsdecode(map_path(cfg.home, cfg.path_map))
        plan = plan_actors(
            self._gpus(), n_models, cfg, max(1, sum(n["Alive"] for n in self.ray.nodes())), self._free_cpus()
        )
        make = lambda: self._actor_class.options(max_restarts=0, **plan.options).remote(  # noqa: E731
            spec, plan.device, cfg.precision, home, plan.threads
        )
        size = plan.size
        pool = _Pool(make, size)
        try:
            described = self.ray.get([a.describe.remote() for a in pool.actors])
        except self.ray.exceptions.RayActorError as e:
            raise ModelNotAvailable(f"{model.spec.label} did not load on the Ray cluster: {_cause(e)}") from e
        except self.ray.exceptions.RayTaskError as e:
            cause = e.as_instanceof_cause()
            raise (cause if isinstance(cause, ModelNotAvailable) else ModelNotAvailable(str(cause))) from e
        fingerprint, dev, precision, _ = described[0]
        if fingerprint != model.fingerprint:
            for actor in pool.actors:
                self.ray.kill(actor)
            raise ModelNotAvailable(
                f"{model.spec.label} loads on the Ray cluster as {fingerprint}, not {model.fingerprint} "
                "whose vectors the library holds; give every node the same weights"
            )
        self.devices[model.fingerprint] = f"{dev} {precision}, {size} Ray actor{'s' * (size > 1)}"
        self._pools[model.fingerprint] = pool
        self._specs[model.fingerprint] = described[0][3]
        return pool

    # -- the run ---------------------------------------------------------------------------

    def embed(self, tasks: Sequence[EmbedTask], models: Sequence[ModelRef]) -> Iterator[list[EmbedResult]]:
        """Results in batches as chunks finish (any order); raises ModelNotAvailable here, not on iteration."""
        self._connect()
        for m in models:
            self._pool(m, len(models))
        images = [t for t in tasks if t.kind == IMAGE]
        texts = [t for t in tasks if t.kind != IMAGE]
        return self._run(images, texts, list(models))

    def _run(self, images: list[EmbedTask], texts: list[EmbedTask], models: list[ModelRef]) -> Iterator[list[EmbedResult]]:
        if not models:
            yield [EmbedResult(t.key) for t in [*images, *texts]]
            return
        if images:
            yield from self._embed_images(images, models)
        for start in range(0, len(texts), TEXT_BATCH):
            yield self._embed_texts(texts[start : start + TEXT_BATCH], models)

    def _embed_texts(self, tasks: list[EmbedTask], models: list[ModelRef]) -> list[EmbedResult]:
        results = [EmbedResult(t.key) for t in tasks]
        for m in models:
            pool = self._pools[m.fingerprint]
            with self._clock("encode"):
                vectors = self.ray.get(pool.actors[pool.least_busy()].encode_texts.remote([str(t.value) for t in tasks]))
            for res, v in zip(results, vectors):
                res.vectors[m.fingerprint] = v
        return results

    def _embed_images(self, tasks: list[EmbedTask], models: list[ModelRef]) -> Iterator[list[EmbedResult]]:
        cfg = self.config
        size = cfg.chunk or (64 if self._gpus() else 16)  # a GPU wants larger batches; a CPU overlaps better with small
        self._queue = [_Chunk(tasks[i : i + size]) for i in range(0, len(tasks), size)][::-1]
        self._active, self._waiting = [], {}
        limit = cfg.in_flight or max(2, 2 * int(self.ray.cluster_resources().get("CPU", 1)))
        specs = list(dict.fromkeys(self._specs[m.fingerprint] for m in models))
        try:
            while self._queue or self._active:
                while self._queue and len(self._active) < limit:
                    self._submit_decodes(self._queue.pop(), specs)
                with self._clock("wait"):  # the driver waiting on the cluster
                    ready, _ = self.ray.wait(list(self._waiting), num_returns=1, timeout=1.0) if self._waiting else ([], [])
                for ref in ready:
                    chunk, step, key = self._waiting.pop(ref)
                    if step == "decode":
                        self._decoded(chunk, key, ref, models)
                    else:
                        self._encoded(chunk, key, ref)
                self._cancel_overdue()
                for chunk in [c for c in self._active if self._is_done(c, specs, models)]:
                    self._active.remove(chunk)
                    yield self._results(chunk, models)
        finally:
            for ref in self._waiting:
                self.ray.cancel(ref, force=True)
            self._queue, self._active, self._waiting = [], [], {}

    def _submit_decodes(self, chunk: _Chunk, specs: list[InputSpec]) -> None:
        paths = [map_path(t.value, self.config.path_map) for t in chunk.tasks]
        chunk.started = time.monotonic()
        self._active.append(chunk)
        for spec in specs:
            status_ref, pixels_ref = self._remote_decode.remote(paths, spec, self.config.max_pixels)
            chunk.decodes[spec] = (status_ref, pixels_ref)
            self._waiting[status_ref] = (chunk, "decode", spec)

    def _decoded(self, chunk: _Chunk, spec: InputSpec, ref: Any, models: list[ModelRef]) -> None:
        try:
            chunk.statuses[spec] = self.ray.get(ref)
        except self.ray.exceptions.RayError as e:  # the worker died, or the task was cancelled as hung
            self._crashed(chunk, e)
            return
        for m in models:
            if self._specs[m.fingerprint] == spec and self._ok_count(chunk, m):
                self._submit_encode(chunk, m.fingerprint)

    def _crashed(self, chunk: _Chunk, error: Exception) -> None:
        """A decode task's worker died: its files are tried again one per task; a file that
        kills its worker CRASHES_PER_FILE times in a row is a transient failure."""
        for ref, (other, _, _) in list(self._waiting.items()):
            if other is chunk:
                del self._waiting[ref]
                self.ray.cancel(ref, force=True)
        crashes = chunk.crashes + 1
        if len(chunk.tasks) == 1 and crashes >= CRASHES_PER_FILE:
            chunk.failure = Failure(f"decoder crashed on a Ray worker ({_cause(error)})", is_transient=True)
            return
        self._active.remove(chunk)
        if len(chunk.tasks) > 1:
            self._queue.extend(_Chunk([t]) for t in reversed(chunk.tasks))
        else:
            self._queue.append(_Chunk(chunk.tasks, crashes=crashes))

    def _submit_encode(self, chunk: _Chunk, fingerprint: str) -> None:
        pool = self._pools[fingerprint]
        i = pool.least_busy()
        pool.busy[i] += 1
        ref = pool.actors[i].encode_images.remote(chunk.decodes[self._specs[fingerprint]][1])
        chunk.encodes[fingerprint] = (ref, i)
        self._waiting[ref] = (chunk, "encode", fingerprint)

    def _encoded(self, chunk: _Chunk, fingerprint: str, ref: Any) -> None:
        pool = self._pools[fingerprint]
        _, index = chunk.encodes.pop(fingerprint)
        pool.busy[index] = max(0, pool.busy[index] - 1)
        try:
            chunk.vectors[fingerprint] = self.ray.get(ref)
        except self.ray.exceptions.RayActorError:  # the actor died (killed, out of memory): a new one takes over
            tries = chunk.encode_tries.get(fingerprint, 0) + 1
            if tries > ENCODE_RETRIES:
                raise
            chunk.encode_tries[fingerprint] = tries
            pool.replace(index)
            self._submit_encode(chunk, fingerprint)
        except self.ray.exceptions.ObjectLostError as e:  # the node holding its pixels left: decode again
            self._crashed(chunk, e)

    def _cancel_overdue(self) -> None:
        """Cancel decode tasks running past timeout_s per file: a hung decoder counts as a crash."""
        now = time.monotonic()
        for ref, (chunk, step, _) in list(self._waiting.items()):
            if step == "decode" and now - chunk.started > self.config.timeout_s * len(chunk.tasks) + 30:
                self.ray.cancel(ref, force=True)  # its ray.get raises TaskCancelledError: a crash
                chunk.started = float("inf")

    def _is_done(self, chunk: _Chunk, specs: list[InputSpec], models: list[ModelRef]) -> bool:
        if chunk.failure is not None:
            return True
        if len(chunk.statuses) < len(specs):
            return False
        return all(m.fingerprint in chunk.vectors or not self._ok_count(chunk, m) for m in models)

    def _ok_count(self, chunk: _Chunk, model: ModelRef) -> int:
        statuses = chunk.statuses.get(self._specs[model.fingerprint], [])
        return sum(isinstance(s, ImageInfo) for s in statuses)

    def _results(self, chunk: _Chunk, models: list[ModelRef]) -> list[EmbedResult]:
        results = [EmbedResult(t.key) for t in chunk.tasks]
        if chunk.failure is not None:
            for res in results:
                res.failures.append(chunk.failure)
            return results
        for statuses in chunk.statuses.values():
            for res, status in zip(results, statuses):
                if isinstance(status, ImageInfo):
                    res.info = res.info or status
                else:
                    res.failures.append(Failure(status.reason))
        for m in models:
            statuses = chunk.statuses[self._specs[m.fingerprint]]
            ok = [res for res, s in zip(results, statuses) if isinstance(s, ImageInfo)]
            for res, v in zip(ok, chunk.vectors.get(m.fingerprint, [])):
                res.vectors[m.fingerprint] = v
        return results


def _cause(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__
