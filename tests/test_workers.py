"""Decoder worker processes: order, hangs and crashes contained, memory limits."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import make_photo
from indexer.decode import DecodedImage, DecodeFailure, InputSpec, decode_image
from indexer.decode_worker import WorkerFailure
from indexer.workers import DecodePool, PoolConfig

SPEC = InputSpec(64, 64)


def test_results_come_back_in_order_and_equal_in_process_decoding(tmp_path: Path) -> None:
    paths = [str(make_photo(tmp_path / f"{i}.jpg", seed=i)) for i in range(20)]
    paths.insert(7, str(tmp_path / "missing.jpg"))
    with DecodePool(SPEC, PoolConfig(workers=2, prefetch=4)) as pool:
        results = list(pool.decode(paths))
    assert len(results) == 21
    for path, got in zip(paths, results):
        want = decode_image(path, SPEC)
        if isinstance(want, DecodedImage):
            assert isinstance(got, DecodedImage)
            np.testing.assert_array_equal(got.pixels, want.pixels)
            assert got.info == want.info
        else:
            assert got == want


def test_decoders_run_at_lower_cpu_priority_than_the_encoder(tmp_path: Path) -> None:
    path = str(make_photo(tmp_path / "a.jpg", seed=1))
    own = os.getpriority(os.PRIO_PROCESS, 0)
    for nice, want in ((PoolConfig().nice, min(19, own + 19)), (0, own)):
        with DecodePool(SPEC, PoolConfig(workers=2, nice=nice)) as pool:
            list(pool.decode([path] * 10))  # four files queue per worker: both have served some
            assert [os.getpriority(os.PRIO_PROCESS, w.proc.pid) for w in pool._workers] == [want, want]


def test_a_hanging_file_times_out_and_the_run_goes_on(tmp_path: Path) -> None:
    fifo = tmp_path / "stuck.jpg"
    os.mkfifo(fifo)  # opening it blocks forever: a hung decoder
    good = [str(make_photo(tmp_path / f"{i}.jpg", seed=i)) for i in range(3)]
    with DecodePool(SPEC, PoolConfig(workers=1, timeout_s=1.0)) as pool:
        results = list(pool.decode([good[0], str(fifo), good[1], good[2]]))
        assert pool.restarts == 1
    assert results[1] == WorkerFailure("decoder timed out after 1s")  # retried by the next run
    assert all(isinstance(r, DecodedImage) for r in (results[0], results[2], results[3]))


def test_a_crashed_decoder_is_replaced_and_its_file_reported(tmp_path: Path) -> None:
    fifo = tmp_path / "crash.jpg"
    os.mkfifo(fifo)
    good = str(make_photo(tmp_path / "ok.jpg", seed=1))
    with DecodePool(SPEC, PoolConfig(workers=1, timeout_s=60)) as pool:
        victim = pool._workers[0].proc.pid
        assert victim is not None
        # Kill the worker while it is stuck on the FIFO, as a segfault in a codec would.
        threading.Timer(1.0, os.kill, (victim, signal.SIGKILL)).start()
        started = time.monotonic()
        results = list(pool.decode([str(fifo), good]))
    assert results[0] == WorkerFailure("decoder crashed (exit -9)")
    assert isinstance(results[1], DecodedImage)
    assert time.monotonic() - started < 30


def test_memory_limit_turns_a_blow_up_into_a_skip(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    Image.new("RGB", (9000, 9000), (10, 20, 30)).save(big, compress_level=1)  # 243 MB once decoded
    small = str(make_photo(tmp_path / "small.jpg", seed=2))
    with DecodePool(SPEC, PoolConfig(workers=1, memory_mb=400)) as pool:
        results = list(pool.decode([str(big), small]))
    assert results[0] == DecodeFailure("out of memory while decoding")
    assert isinstance(results[1], DecodedImage)
