"""What the Ray executor is told, and how it plans: paths as the cluster's nodes see them, its
configuration, and how many encoder actors each model gets.

Kept apart from indexer.ray_executor (which runs the work) so that options can be parsed,
checked and planned, by the CLI and the tests, without the executor. Neither module imports
`ray` at load time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

from indexer.decode import DEFAULT_MAX_PIXELS
from indexer.errors import BadOption
from indexer.model_spec import ModelSpec


@dataclass(frozen=True)
class PathMap:
    """The driver sees files under `local`; the cluster's nodes see them under `remote`."""

    local: bytes
    remote: bytes

    @classmethod
    def parse(cls, text: str) -> PathMap:
        """`LOCAL=REMOTE` (two absolute folders); raises BadOption otherwise."""
        local, sep, remote = text.partition("=")
        if not sep or not os.path.isabs(local) or not os.path.isabs(remote):
            raise BadOption("path_map", text, "LOCAL=REMOTE, two absolute folders")
        return cls(os.fsencode(local.rstrip("/") or "/"), os.fsencode(remote.rstrip("/") or "/"))

    def apply(self, path: bytes) -> bytes | None:
        """`path` under `remote`, or None when it is not under `local`."""
        if path == self.local:
            return self.remote
        prefix = self.local if self.local.endswith(b"/") else self.local + b"/"
        if path.startswith(prefix):
            return os.path.join(self.remote, path[len(prefix) :])
        return None


def map_path(path: bytes | str, maps: Sequence[PathMap]) -> bytes | str:
    """`path` as the nodes see it: the first (longest) matching map applies; unmapped paths stay."""
    raw = os.fsencode(path)
    for m in sorted(maps, key=lambda m: len(m.local), reverse=True):
        mapped = m.apply(raw)
        if mapped is not None:
            return mapped if isinstance(path, bytes) else os.fsdecode(mapped)
    return path


@dataclass(frozen=True)
class RayConfig:
    """Where and how the Ray executor runs."""

    address: str | None = None  # a cluster's address (`auto`, `HOST:PORT`, `ray://HOST:10001`); None starts a local instance
    path_map: tuple[PathMap, ...] = ()
    device: str = "auto"  # of the encoder actors: auto uses a GPU per actor when the cluster has GPUs
    precision: str = "auto"
    home: str | None = None  # the library folder (model cards saved there), as the driver sees it
    chunk: int = 0  # files per decode task and per encoder call; 0: 16 on CPUs, 64 when the cluster has GPUs
    in_flight: int = 0  # chunks in flight; 0: twice the cluster's CPUs
    encoders: int = 0  # actors per model; 0: one per GPU (shared among models), else 1
    encoder_threads: int = 0  # torch threads of a CPU actor; 0: torch's default (the node's physical cores)
    timeout_s: float = 60.0  # per file, before its decode task is cancelled
    max_pixels: int = DEFAULT_MAX_PIXELS
    num_cpus: int = 0  # local instance only: CPUs it may use (0: all)
    object_store_mb: int = 0  # local instance only: 0 for Ray's default
    worker_env: tuple[tuple[str, str], ...] = ()  # environment variables of decode tasks and actors (a Ray runtime_env)


@dataclass(frozen=True)
class ActorPlan:
    """How many encoder actors a model gets, and what each asks Ray for."""

    size: int
    options: dict[str, Any]  # Ray resources of one actor
    device: str  # the device each actor loads its model on
    threads: int  # torch threads of a CPU actor (0: torch's default, the node's physical cores)


def plan_actors(gpus: int, n_models: int, cfg: RayConfig, nodes: int = 1, cpus: int = 2) -> ActorPlan:
    """With GPUs in the cluster: a GPU per actor, the GPUs shared out among the models (each
    model its own actors, so two models never queue on one stage). Else one CPU actor per
    model and node, spread over the nodes, each holding a CPU unless that would leave
    fewer CPUs than actors for the decode tasks (which would then never run)."""
    if gpus and cfg.device in ("auto", "cuda"):
        share = gpus / n_models
        return ActorPlan(cfg.encoders or max(1, int(share)), {"num_gpus": min(1.0, share), "num_cpus": 1}, "cuda", 0)
    device = "cpu" if cfg.device == "auto" else cfg.device
    size = cfg.encoders or nodes
    held = 1 if cpus >= 2 * size * n_models else 0
    return ActorPlan(size, {"num_cpus": held, "scheduling_strategy": "SPREAD"}, device, cfg.encoder_threads)


def mapped_spec(spec: ModelSpec, maps: Sequence[PathMap]) -> ModelSpec:
    """`spec` with its checkpoint path as the nodes see it."""
    if spec.checkpoint is None:
        return spec
    return ModelSpec(spec.name, spec.pretrained, os.fsdecode(map_path(spec.checkpoint, maps)))
