"""Executors beyond this machine, configured from a Library: `ray_executor`.

The CLI's `clipdex index --executor ray` and library users get the same executor:

    with lib.ray_executor(address="auto", path_map=["/photos=/mnt/photos"]) as ex:
        lib.index(["/photos"], executor=ex)

Imports no ray until called (`pip install 'clipdex[ray]'`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Sequence

from indexer.errors import BadOption

if TYPE_CHECKING:
    from pathlib import Path

    from indexer.ray_executor import RayExecutor


def ray_executor(
    home: Path,
    device: str = "auto",
    precision: str = "auto",
    *,
    address: str | None = None,
    path_map: Sequence[str] = (),
    batch_size: int = 0,
) -> RayExecutor:
    """A Ray executor for the library at `home`: on the cluster at `address` (None: a local
    Ray instance), with `path_map` entries `LOCAL=REMOTE`, and `batch_size` files per decode
    task and encoder call (0: 16 on CPUs, 64 with GPUs). Raises BadOption for a malformed map, ExecutorUnavailable
    when ray is not installed."""
    from indexer.ray_executor import RayExecutor
    from indexer.ray_plan import PathMap, RayConfig

    if batch_size < 0:
        raise BadOption("batch_size", batch_size, "0 or more")
    maps = tuple(PathMap.parse(m) for m in path_map)
    config = RayConfig(address=address or None, path_map=maps, device=device, precision=precision, home=str(home))
    return RayExecutor(replace(config, chunk=batch_size) if batch_size else config)
