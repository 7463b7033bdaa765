"""The default executor: decoder processes on this machine, the encoder in this process.

Images are decoded by `indexer.workers.DecodePool` (one pool per input geometry, started
on first use and kept until `close`), whose workers decode ahead while the encoder runs
on the batch before and the caller commits the one before that. Texts go straight to
the encoder. Models come from the caller's loader (the Library's encoder cache), so a
model already loaded is not loaded again; each is checked against its fingerprint.
"""

from __future__ import annotations

from itertools import islice
from typing import Callable, Iterator, Sequence

import numpy as np

from indexer.decode import DecodedImage, DecodeResult, InputSpec
from indexer.decode_worker import WorkerFailure
from indexer.encode import auto_batch_size, encode_images, encode_texts
from indexer.executor import EmbedResult, EmbedTask, Failure, ModelRef, StageClock, check_fingerprint
from indexer.items import IMAGE
from indexer.models import Encoder, ModelSpec
from indexer.workers import DecodePool, PoolConfig

TEXT_BATCH = 256  # texts per encoder call: a batch is padded only to its longest text


ImageEncodeFn = Callable[[np.ndarray], np.ndarray]  # (B, H, W, 3) uint8 → (B, D) unit float32


class LocalExecutor:
    """Embeds on this machine. `batch_size` 0: images per encoder call sized for the device.

    `images` gives the function an encoder's images are encoded with (the library passes
    `indexer.precision_guard.ImageEncoding`: a reduced precision once its guard accepts it);
    by default `encode_images` at the encoder's precision.
    """

    def __init__(
        self,
        loader: Callable[[ModelSpec], Encoder],
        *,
        batch_size: int = 0,
        pool: PoolConfig = PoolConfig(),
        images: Callable[[Encoder], ImageEncodeFn] | None = None,
    ) -> None:
        self.loader = loader
        self.batch_size = batch_size
        self.pool = pool
        self.images = images
        self.timings: dict[str, float] = {}
        self.devices: dict[str, str] = {}  # fingerprint -> "cuda:0 fp16": where each model ran
        self._clock = StageClock(self.timings)
        self._pools: dict[InputSpec, DecodePool] = {}

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the decoder processes."""
        for pool in self._pools.values():
            pool.close()
        self._pools = {}

    def embed(self, tasks: Sequence[EmbedTask], models: Sequence[ModelRef]) -> Iterator[list[EmbedResult]]:
        """Results in input order, images first, in batches; raises ModelNotAvailable here, not on iteration."""
        encoders = [check_fingerprint(self.loader(m.spec), m) for m in models]
        self.devices.update({e.fingerprint: f"{e.device} {e.precision}" for e in encoders})
        images = [t for t in tasks if t.kind == IMAGE]
        texts = [t for t in tasks if t.kind != IMAGE]
        return self._run(images, texts, encoders)

    def _run(self, images: list[EmbedTask], texts: list[EmbedTask], encoders: list[Encoder]) -> Iterator[list[EmbedResult]]:
        if not encoders:  # nothing to embed with: every task has its (empty) result
            yield [EmbedResult(t.key) for t in [*images, *texts]]
            return
        if images:
            yield from self._embed_images(images, encoders)
        for start in range(0, len(texts), TEXT_BATCH):
            yield self._embed_texts(texts[start : start + TEXT_BATCH], encoders)

    def _embed_images(self, tasks: list[EmbedTask], encoders: list[Encoder]) -> Iterator[list[EmbedResult]]:
        size = self.batch_size if self.batch_size > 0 else min(auto_batch_size(e) for e in encoders)
        paths = [t.value for t in tasks]
        streams = {spec: self._decoder(spec).decode(paths) for spec in dict.fromkeys(e.input_spec for e in encoders)}
        try:
            # Made while the decoders fill the first batch (an ONNX Runtime session takes a few tenths of a second to open).
            encode_fns = {e.fingerprint: self._image_fn(e) for e in encoders}
            for start in range(0, len(tasks), size):
                n = min(size, len(tasks) - start)
                with self._clock("wait_decode"):  # time the encoder waited on decoders: ~0 when overlapped
                    decoded = {spec: list(islice(stream, n)) for spec, stream in streams.items()}
                yield self._encode_images(tasks[start : start + n], decoded, encoders, encode_fns)
        finally:
            for stream in streams.values():
                stream.close()

    def _image_fn(self, encoder: Encoder) -> ImageEncodeFn:
        if self.images is not None:
            return self.images(encoder)
        return lambda pixels: encode_images(encoder, pixels)

    def _encode_images(
        self,
        tasks: list[EmbedTask],
        decoded: dict[InputSpec, list[DecodeResult]],
        encoders: list[Encoder],
        encode_fns: dict[str, ImageEncodeFn],
    ) -> list[EmbedResult]:
        results = [EmbedResult(t.key) for t in tasks]
        for outcomes in decoded.values():
            for res, out in zip(results, outcomes):
                if isinstance(out, DecodedImage):
                    res.info = res.info or out.info
                else:
                    res.failures.append(Failure(out.reason, is_transient=isinstance(out, WorkerFailure)))
        for enc in encoders:
            ok = [(res, out) for res, out in zip(results, decoded[enc.input_spec]) if isinstance(out, DecodedImage)]
            if ok:
                with self._clock("encode"):
                    vectors = encode_fns[enc.fingerprint](np.stack([out.pixels for _, out in ok]))  # (B, D)
                for (res, _), v in zip(ok, vectors):
                    res.vectors[enc.fingerprint] = v
        return results

    def _embed_texts(self, tasks: list[EmbedTask], encoders: list[Encoder]) -> list[EmbedResult]:
        results = [EmbedResult(t.key) for t in tasks]
        for enc in encoders:
            with self._clock("encode"):
                vectors = encode_texts(enc, [str(t.value) for t in tasks])  # (B, D)
            for res, v in zip(results, vectors):
                res.vectors[enc.fingerprint] = v
        return results

    def _decoder(self, spec: InputSpec) -> DecodePool:
        if spec not in self._pools:
            self._pools[spec] = DecodePool(spec, self.pool)
        return self._pools[spec]
