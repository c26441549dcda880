"""The loader's pipeline stages: small iterator -> iterator functions, each yielding the stream
its docstring names (webdataset's style). ``loader`` assembles them per worker; the order of a
training stream and of an evaluation pass is drawn in ``loader``'s module docstring.
"""

from __future__ import annotations

import logging
import tarfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mtl_data.errors import MtlDataError
from mtl_data.schema.sample import Sample
from mtl_data.shards.tario import iter_tar_samples
from mtl_data.train.data.decode import CorruptSampleError, Decoded, refuse_unsafe
from mtl_data.train.data.targets import TargetConfig, collate, encode_example
from mtl_data.train.data.transforms import TransformConfig, View, transform_frames

logger = logging.getLogger(__name__)

#: consecutive shard draws that yield no sample before a source is declared unreadable.
MAX_EMPTY_DRAWS = 16
#: source choices drawn at once by ``mix_sources`` (one numpy call instead of one per sample).
_MIX_BLOCK = 1024
#: what reading a damaged tar raises (tarfile.ReadError on truncation, zlib/unicode ValueErrors...).
_TAR_ERRORS = (tarfile.TarError, OSError, EOFError, ValueError)


# ---- bookkeeping shared by the stages of one worker ------------------------------------------


class SkipCounter:
    """Samples skipped in this worker since the last batch was formed (``take`` resets it)."""

    def __init__(self) -> None:
        self.pending = 0

    def add(self, count: int, why: str) -> None:
        self.pending += count
        logger.warning("skipped %d sample(s): %s", count, why)

    def take(self) -> int:
        count, self.pending = self.pending, 0
        return count


class BatchRing:
    """Reused shared-memory tensors for the dense arrays of a worker's batches.

    A batch a worker sends is moved into shared memory by torch (``Tensor.share_memory_``:
    a fresh segment per tensor and a copy): for a 15 MiB batch, 27 ms of page faults and copying
    per batch of 16, 1.7 ms per sample (BENCHMARKS.md, "Loader"). Here the image, class maps
    and depth of a batch are written straight into one of ``slots`` sets of tensors allocated
    once in shared memory; torch sends a shared tensor as a handle, with no copy, and the main
    process maps each slot once.

    Reuse is safe because the DataLoader gives a worker at most ``prefetch_factor`` batches to
    produce ahead of the one the main process handed out last, and the ``Loader`` never yields
    these tensors: ``targets.expand`` widens each into a new tensor (and ``pin_memory`` copies
    first when on), so by the time a slot comes round again (``prefetch_factor + 2`` slots)
    nobody reads it. Only the dense keys go here (``KEYS``); the small ones travel as usual.

    Args:
        slots: tensor sets in the ring (``prefetch_factor + 2``).
    """

    #: the keys written into the ring: the dense arrays ``expand`` widens into new tensors.
    KEYS = ("image", "image_prev", "seg", "depth", "lane")

    def __init__(self, slots: int):
        if slots < 2:
            raise ValueError(f"a batch ring needs at least 2 slots, got {slots}")
        self.slots = slots
        self._ring: list[dict[str, torch.Tensor]] = []
        self._next = 0

    def next_slot(self, examples: list[dict], batch_size: int) -> dict[str, torch.Tensor]:
        """The next slot's tensors, (batch_size, ...) per dense key of ``examples`` (allocated
        on first use from the first example's shapes and dtypes)."""
        if not self._ring:
            first = examples[0]
            shapes = {k: np.asarray(first[k]) for k in self.KEYS if k in first}
            self._ring = [
                {k: _shared_empty((batch_size, *_batch_shape(k, a)), a.dtype) for k, a in shapes.items()}
                for _ in range(self.slots)
            ]
        slot = self._ring[self._next]
        self._next = (self._next + 1) % self.slots
        return slot


def _batch_shape(key: str, array: np.ndarray) -> tuple[int, ...]:
    """Per-sample shape in the batch: images are (H, W, 3) in examples, (3, H, W) in batches
    (previous frames (N, H, W, 3) -> (N, 3, H, W))."""
    if key == "image":
        return (array.shape[2], *array.shape[:2])
    if key == "image_prev":
        return (array.shape[0], array.shape[3], *array.shape[1:3])
    return array.shape


def _shared_empty(shape: tuple[int, ...], dtype: np.dtype) -> torch.Tensor:
    """An uninitialized tensor in a new shared-memory segment (no private copy made first)."""
    dt = torch.from_numpy(np.empty(0, dtype)).dtype
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    storage = torch.UntypedStorage._new_shared(nbytes)
    return torch.empty(0, dtype=dt).set_(storage, 0, shape)


def worker_info() -> tuple[int, int]:
    """(worker id, number of workers) of this DataLoader worker; (0, 1) in the main process."""
    info = torch.utils.data.get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


# ---- stages (iterator -> iterator) -----------------------------------------------------------


def read_shards(urls: Iterable[dict], expected: Mapping[str, int], skips: SkipCounter) -> Iterator[dict]:
    """``{"url": shard path}`` -> every raw sample of each shard, in order.

    Yields ``{"__key__", "__url__", ext: bytes}``; a pickle-style member raises
    ``decode.UnsafeMemberError`` as soon as it is read. A shard that is truncated or unreadable ends
    early; the samples its manifest count (``expected[url]``) says were not read are counted as
    skipped. After ``MAX_EMPTY_DRAWS`` consecutive shards without a sample the source is
    declared unreadable (an endless resampling of broken shards would hang silently).
    """
    empty_draws = 0
    for item in urls:
        url = item["url"]
        read, error = 0, None
        try:
            for key, members in iter_tar_samples(Path(url)):
                read += 1
                raw = {"__key__": key, "__url__": url, **members}
                refuse_unsafe(raw)  # at once, not when the shuffle buffer gets to it
                yield raw
        except _TAR_ERRORS as exc:
            error = exc
        lost = expected.get(url, read) - read
        if error is not None or lost > 0:
            why = f"unreadable after {read} sample(s): {error}" if error is not None else "ends early"
            skips.add(max(lost, 1), f"{url}: {why}")
        empty_draws = 0 if read else empty_draws + 1
        if empty_draws >= MAX_EMPTY_DRAWS:
            raise MtlDataError(
                f"{url}: {empty_draws} shard draws in a row gave no readable sample; "
                "check the shards with `mtl-data validate`"
            )


def drop_keys(raws: Iterable[dict], keys: frozenset[str]) -> Iterator[dict]:
    """raw samples -> those whose key is not in ``keys`` (samples that label no requested task)."""
    for raw in raws:
        if raw["__key__"] not in keys:
            yield raw


def mix_sources(streams: Sequence[Iterator[dict]], probs: Sequence[float], rng: np.random.Generator) -> Iterator[dict]:
    """raw samples of several endless streams -> one stream; each next sample comes from
    stream i with probability ``probs[i]``, drawn independently of the content."""
    while True:
        for i in rng.choice(len(streams), size=_MIX_BLOCK, p=probs):
            yield next(streams[i])


def decode_samples(
    raws: Iterable[dict | None], decoder: Callable[[dict], Decoded], skips: SkipCounter, keep_slots: bool
) -> Iterator[Decoded | None]:
    """raw samples (None: a padding slot) -> decoded samples.

    A corrupt sample is counted; it is dropped, or with ``keep_slots`` (evaluation) becomes None
    so that the slot count of the worker does not change.
    """
    for raw in raws:
        if raw is None:
            yield None
            continue
        try:
            yield decoder(raw)
        except CorruptSampleError as exc:
            skips.add(1, str(exc))
            if keep_slots:
                yield None


def transform_samples(
    decoded: Iterable[Decoded | None], config: TransformConfig, rng: np.random.Generator
) -> Iterator[tuple[Sample, View] | None]:
    """decoded samples -> (sample at ``config.image_size`` (resized, flipped, jittered), its
    ``View`` of the stored pixels, its previous frames transformed alike); None stays None."""
    for item in decoded:
        yield (
            None
            if item is None
            else transform_frames(item.sample, config, rng, image=item.image, depth=item.depth, prev=item.prev)
        )


def encode_samples(
    samples: Iterable[tuple[Sample, View, tuple[np.ndarray, ...]] | None], config: TargetConfig
) -> Iterator[dict]:
    """(sample, view, previous frames) -> fixed-shape examples; None -> a masked dummy (key "",
    every ``present`` False)."""
    for item in samples:
        yield encode_example(None, config) if item is None else encode_example(item[0], config, item[1], item[2])


def batches(
    examples: Iterable[dict], batch_size: int, skips: SkipCounter, ring: BatchRing | None = None
) -> Iterator[dict]:
    """examples -> compact collated batches of ``batch_size`` (the last one shorter when the
    stream ends; ``targets.collate(compact=True)``), each with ``skipped``: the samples this
    worker skipped since its previous batch."""
    chunk: list[dict] = []
    for example in examples:
        chunk.append(example)
        if len(chunk) == batch_size:
            yield _collate(chunk, batch_size, skips, ring)
            chunk = []
    if chunk:
        yield _collate(chunk, batch_size, skips, ring)


def _collate(chunk: list[dict], batch_size: int, skips: SkipCounter, ring: BatchRing | None) -> dict:
    out = None if ring is None else ring.next_slot(chunk, batch_size)
    return {**collate(chunk, compact=True, out=out), "skipped": skips.take()}


@dataclass(frozen=True)
class Segment:
    """Consecutive samples of one shard: read from ``offset``, expecting ``keys`` in order."""

    url: str
    offset: int
    keys: tuple[str, ...]


def read_segments(segments: Iterable[Segment], skips: SkipCounter) -> Iterator[dict | None]:
    """segments -> one raw sample per expected key, in order; None (counted) for each sample that
    cannot be read: a truncated or unreadable shard, or a key that is not where the manifest says."""
    for seg in segments:
        got = 0
        reader = iter_tar_samples(Path(seg.url), seg.offset)
        try:
            for expected in seg.keys:
                found = next(reader, None)
                if found is None:
                    raise EOFError("the shard ends early")
                if found[0] != expected:
                    raise ValueError(f"found {found[0]!r} where the manifest puts {expected!r} (stale manifest?)")
                got += 1
                yield {"__key__": expected, "__url__": seg.url, **found[1]}
        except _TAR_ERRORS as exc:
            lost = len(seg.keys) - got
            skips.add(lost, f"{seg.url}: unreadable from {seg.keys[got]!r} on: {exc}")
            yield from [None] * lost
        finally:
            reader.close()  # close the tar file now, not at garbage collection


def split_evenly(n: int, parts: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of ``parts`` contiguous ranges covering ``range(n)``, sizes differing by <= 1."""
    edges = [(n * i) // parts for i in range(parts + 1)]
    return list(zip(edges[:-1], edges[1:]))


def then_dummies(raws: Iterable[dict | None], count: int) -> Iterator[dict | None]:
    """raw samples, then ``count`` None padding slots."""
    yield from raws
    yield from [None] * count
