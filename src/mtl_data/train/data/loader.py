"""The streaming loader of design.md section 6: shards + manifests -> batches of the training contract.

``build_loader(shards, batch_size=..., image_size=...)`` returns a ``Loader``: iterate it for
batches (``targets.collate``'s dict: ``image``, ``key``, ``source``, ``present``, one entry per
task, plus ``skipped``; with ``frames`` > 1 also ``image_prev`` and ``prev_present``), read
``loader.skipped`` for the corrupt samples skipped so far.

Training (``infinite=True``), in every DataLoader worker of every rank (the stages are in
``stages``)::

    per source s (p_s > 0):
      wds.ResampledShards(shards of s in the split)   # {"url"}: shards drawn with replacement, seeded
      -> read_shards                                   # raw samples {"__key__", "__url__", ext: bytes}
      -> drop_keys                                     # ... without those that label no requested task
      -> wds.shuffle(buffer, rng)                      # ... shuffled within a buffer
    mix_sources(p)                                     # raw samples, each from source s with probability p_s
    -> decode_samples    # Decoded (corrupt: counted, dropped)
    -> transform_samples # Sample at image_size (resize/letterbox, flip, jitter)
    -> encode_samples    # examples (numpy, fixed shapes)
    -> batches           # collated batch dicts + "skipped"

``read_shards`` is this project's tar reader (``shards.tario``) rather than
``wds.tarfile_to_samples``: it closes each shard when done with it (webdataset leaves the file
handles to the garbage collector) and knows from the manifest how many samples a damaged shard
lost. The stream never ends: epochs are counted in steps by the trainer, no dataset length is
needed. Ranks and workers are split **by seed**, not by shard: each (rank, worker) resamples
the full shard list of every source with its own seed, so no rank can run out of shards or
wait for another (a source with one shard feeds 64 workers as well as one). Every randomness
(shard draws, shuffle buffers, the source of each sample, flips, jitter) comes from
``np.random.SeedSequence([seed, rank, worker, epoch])``, so the same (seed, rank, world size,
workers) gives the same batches; each new ``iter(loader)`` is the next epoch (new streams, no
repeat), and ``loader.set_epoch(n)`` restarts at pass n when resuming.

Evaluation (``infinite=False``) makes exactly one pass. The split's samples (of the selected
sources, labelling at least one requested task) are listed from the manifests in the order
(source, shard, position) and cut contiguously: ceil(N / world_size) slots per rank, the rank's
slots cut contiguously again across its workers. Each worker reads its range sequentially from
the manifest byte ``offset`` (``shards.tario.iter_tar_samples``): only its own samples, never a
whole shard, which webdataset (shard-granular) could not do without uneven ranks. Slots past N
(the short last rank) are masked dummies (``encode_example(None)``: key "", every ``present``
False); a sample that cannot be read or decoded becomes a dummy too (counted), so every rank
has the same number of batches (``len(loader)``) and batch sizes, and no sample repeats.

Corrupt data: a sample that does not decode (``decode.CorruptSampleError``) is skipped and
counted; a shard that is truncated or unreadable ends early and the samples the manifest lists
in it beyond that point are counted too (a read that fails inside sample k + 1's header also
loses sample k, which the reader has not yet seen end). A pickle-style member stops the loader
(``decode.UnsafeMemberError``). ``Loader.skipped`` sums the counts that each batch carries
(``batch["skipped"]``: samples skipped by its worker since that worker's previous batch).

Workers: a torch ``DataLoader`` with ``batch_size=None`` (batches are formed in the workers),
pinned memory when CUDA is used, ``prefetch_factor`` batches per worker in flight, OpenCV at
one thread per worker. Workers are not persistent: each pass starts them afresh so that they see
the pass's epoch. The multiprocessing context is torch's default (``fork`` on Linux: workers
start in milliseconds; ``spawn`` re-imports torch in each worker, ~1.5 s each) unless
``mp_context`` says otherwise; the workers never touch CUDA, polars or the manifests, which is
what makes forking a process that has used them safe.

``device="cuda"``: batches travel compact (uint8 images and class maps, uint16 depth), are copied
with ``non_blocking=True`` from pinned memory and widened on the device (``targets.expand``:
normalized float32 image, int64 class maps, float32 metres): 4x less to copy than the contract's
dtypes. Without a device the same compact batches cross from the workers (a 256x512 sample with
seg and depth is ~0.8 MB instead of ~3.6 MB) and ``expand`` widens them in the main process.

Shared memory: a worker writes the dense arrays of each batch (image, seg, depth, lane)
straight into one of ``prefetch_factor + 2`` slots allocated once in shared memory
(``stages.BatchRing``), which torch then sends as a handle: no per-batch copy into a fresh
segment, whose page faults cost 1.7 ms per sample (BENCHMARKS.md, "Loader"). What the
``Loader`` yields never aliases a slot (``expand`` makes new tensors), so a consumer may keep
batches as long as it likes. Each worker holds its slots for the pass: about
``(prefetch_factor + 2) x batch x 0.8 MB`` at 256x512 (a container's ``/dev/shm`` must have
room for them; ``shared_ring=False`` falls back to torch's per-batch segments).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import random
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import polars as pl
import torch
import webdataset as wds

from mtl_data.errors import MtlDataError
from mtl_data.procs import tune_worker_process, usable_cpus
from mtl_data.schema.sample import CLASS_TASKS, TASKS
from mtl_data.shards.reader import ShardSet, labels_any
from mtl_data.train.data.decode import Decoded, decode
from mtl_data.train.data.jpeg import resolve_backend
from mtl_data.train.data.mixing import resolve_mix
from mtl_data.train.data.stages import (
    BatchRing,
    Segment,
    SkipCounter,
    batches,
    decode_samples,
    drop_keys,
    encode_samples,
    mix_sources,
    read_segments,
    read_shards,
    split_evenly,
    then_dummies,
    transform_samples,
    worker_info,
)
from mtl_data.train.data.targets import TargetConfig, expand
from mtl_data.train.data.transforms import TransformConfig

logger = logging.getLogger(__name__)

#: raw samples buffered per source and worker for shuffling (the raw tar bytes: ~0.3 MB for a
#: KITTI frame, ~0.7 MB for A2D2, so 256 costs ~100-200 MB per source and worker).
SHUFFLE_BUFFER = 256

# ---- what a worker needs (plain, picklable data) ---------------------------------------------


@dataclass(frozen=True)
class Settings:
    """Everything the stages of a worker need besides the sample lists.

    Attributes:
        tasks: the requested tasks (labels of others are not decoded).
        transform, targets: the configurations of ``transform_sample`` and ``encode_example``.
        batch_size: samples per batch.
        seed, rank, world_size: what every random stream is seeded with (with worker and epoch).
        reduced_decode: decode JPEGs at reduced size where the training size allows.
        ring_slots: shared-memory batch slots per worker process (``stages.BatchRing``); 0 =
            let torch move each batch into fresh shared memory.
        jpeg_decoder: the resolved ``jpeg`` backend (``opencv`` or ``simplejpeg``).
        prev_frames: previous frames decoded per sample (``LoaderConfig.frames`` - 1).
    """

    tasks: tuple[str, ...]
    transform: TransformConfig
    targets: TargetConfig
    batch_size: int
    seed: int
    rank: int
    world_size: int
    reduced_decode: bool
    ring_slots: int = 0
    jpeg_decoder: str = "opencv"
    prev_frames: int = 0

    def decoder(self) -> Callable[[dict], Decoded]:
        target = self.transform.image_size if self.reduced_decode else None
        return partial(
            decode,
            tasks=self.tasks,
            target_hw=target,
            letterbox=self.transform.letterbox,
            jpeg_decoder=self.jpeg_decoder,
            prev_frames=self.prev_frames,
        )

    def tail(
        self, raws: Iterable[dict | None], skips: SkipCounter, rng: np.random.Generator, keep_slots: bool
    ) -> Iterator[dict]:
        """The stages after the raw samples: decode -> transform -> encode -> batches."""
        stream = decode_samples(raws, self.decoder(), skips, keep_slots)
        stream = transform_samples(stream, self.transform, rng)
        stream = encode_samples(stream, self.targets)
        in_worker = torch.utils.data.get_worker_info() is not None
        ring = BatchRing(self.ring_slots) if self.ring_slots and in_worker else None
        return batches(stream, self.batch_size, skips, ring)


@dataclass(frozen=True)
class SourceShards:
    """One source's shards in the split, for training.

    Attributes:
        name: the source.
        urls: shard paths (absolute), sorted.
        counts: samples per shard URL (the manifest's rows).
        drop: keys of samples that label none of the requested tasks.
    """

    name: str
    urls: tuple[str, ...]
    counts: dict[str, int]
    drop: frozenset[str]


def _tune_worker() -> None:
    """In a DataLoader worker: the process settings of an ingest worker (``engine.
    tune_process_for_ingest``): OpenCV on one thread, since a worker is one core and OpenCV's
    pool would compete with the other workers; glibc keeps freed buffers, since a full-size
    frame's decoded labels (~20 MB) would otherwise be page-faulted back in for every sample.
    The main process (``workers=0``) is left as the caller set it."""
    if torch.utils.data.get_worker_info() is not None:
        tune_worker_process()


class TrainStream(torch.utils.data.IterableDataset):
    """The endless training stream of one worker (module docstring); ``epoch`` is set per pass."""

    def __init__(
        self, settings: Settings, sources: Sequence[SourceShards], probs: Sequence[float], shuffle_buffer: int
    ):
        super().__init__()
        self.settings, self.sources, self.probs = settings, list(sources), list(probs)
        self.shuffle_buffer = shuffle_buffer
        self.epoch = 0

    def __iter__(self) -> Iterator[dict]:
        _tune_worker()
        s = self.settings
        worker, _ = worker_info()
        seq = np.random.SeedSequence([s.seed, s.rank, worker, self.epoch])
        mix_seed, transform_seed, *source_seeds = seq.spawn(2 + len(self.sources))
        skips = SkipCounter()
        streams = [iter(self._source_pipeline(src, seed, skips)) for src, seed in zip(self.sources, source_seeds)]
        raws = mix_sources(streams, self.probs, np.random.default_rng(mix_seed))
        return s.tail(raws, skips, np.random.default_rng(transform_seed), keep_slots=False)

    def _source_pipeline(self, src: SourceShards, seed: np.random.SeedSequence, skips: SkipCounter) -> wds.DataPipeline:
        shard_seed, shuffle_seed = (int(x) for x in seed.generate_state(2))
        bufsize = self.shuffle_buffer
        return wds.DataPipeline(
            # deterministic=True: the draws depend on the seed only (not on pid and time)
            wds.ResampledShards(list(src.urls), seed=shard_seed, worker_seed=lambda: 0, deterministic=True),
            partial(read_shards, expected=src.counts, skips=skips),
            partial(drop_keys, keys=src.drop) if src.drop else None,
            wds.shuffle(bufsize, initial=bufsize, rng=random.Random(shuffle_seed)) if bufsize > 1 else None,
        )


class EvalPass(torch.utils.data.IterableDataset):
    """One worker's part of the evaluation pass of one rank (module docstring).

    Args:
        settings: the shared settings (rank, world size, batch size ...).
        urls, offsets, positions, keys: the N samples of the pass in order (a shard index into
            ``urls`` per sample, its byte offset, its position in the shard, its key).
    """

    def __init__(
        self,
        settings: Settings,
        urls: Sequence[str],
        shard_index: Sequence[int],
        offsets: Sequence[int],
        positions: Sequence[int],
        keys: Sequence[str],
    ):
        super().__init__()
        self.settings, self.urls = settings, list(urls)
        self.shard_index, self.offsets = list(shard_index), list(offsets)
        self.positions, self.keys = list(positions), list(keys)

    def slots(self, num_workers: int) -> list[tuple[int, int]]:
        """Global ``[start, stop)`` slots of each worker of this rank; slots >= N are dummies."""
        s = self.settings
        per_rank = math.ceil(len(self.keys) / s.world_size)
        base = s.rank * per_rank
        return [(base + a, base + b) for a, b in split_evenly(per_rank, num_workers)]

    def num_batches(self, num_workers: int) -> int:
        """Batches this rank yields with ``num_workers`` workers (the same on every rank)."""
        return sum(math.ceil((b - a) / self.settings.batch_size) for a, b in self.slots(num_workers))

    def segments(self, start: int, stop: int) -> list[Segment]:
        """The real samples of slots ``[start, stop)`` as runs of consecutive samples of one shard."""
        out: list[Segment] = []
        stop = min(stop, len(self.keys))
        i = start
        while i < stop:
            j = i + 1
            while (
                j < stop
                and self.shard_index[j] == self.shard_index[i]
                and self.positions[j] == self.positions[j - 1] + 1
            ):
                j += 1
            out.append(Segment(self.urls[self.shard_index[i]], self.offsets[i], tuple(self.keys[i:j])))
            i = j
        return out

    def __iter__(self) -> Iterator[dict]:
        _tune_worker()
        s = self.settings
        worker, num_workers = worker_info()
        start, stop = self.slots(num_workers)[worker]
        skips = SkipCounter()
        raws = read_segments(self.segments(start, stop), skips)
        padding = max(0, stop - max(start, len(self.keys)))
        stream = then_dummies(raws, padding)
        rng = np.random.default_rng(np.random.SeedSequence([s.seed, s.rank, worker]))
        return s.tail(stream, skips, rng, keep_slots=True)


# ---- the Loader ------------------------------------------------------------------------------


def _no_collate(batch: dict) -> dict:
    """The DataLoader's collate_fn: batches are collated in the worker already."""
    return batch


def to_device(batch: dict, device: torch.device) -> dict:
    """Every tensor of ``batch`` (nested dicts included) copied to ``device`` with
    ``non_blocking=True`` (asynchronous from pinned memory); other values as they are."""
    return {
        k: v.to(device, non_blocking=True)
        if isinstance(v, torch.Tensor)
        else to_device(v, device)
        if isinstance(v, dict)
        else v
        for k, v in batch.items()
    }


class Loader:
    """An iterable of batches (see ``build_loader``).

    Attributes:
        skipped: corrupt or unreadable samples skipped so far (all workers, all passes).
        epoch: the pass the next ``iter()`` starts (training streams are seeded with it).
        tasks, sources, probs: what is loaded (``probs``: the sampling probability per source
            in training; in evaluation, each source's share of the pass).
        classes: class names of each class-based task loaded (seg, det2d, det3d, sign), from
            the shards' ``classes.json``: what head sizes are built from.
        config: the ``LoaderConfig`` it was built with.
    """

    def __init__(
        self,
        dataset: TrainStream | EvalPass,
        *,
        workers: int,
        device: torch.device | None,
        pin_memory: bool,
        prefetch_factor: int,
        mp_context: str | None,
        tasks: tuple[str, ...],
        probs: dict[str, float],
        classes: dict[str, tuple[str, ...]],
        config: LoaderConfig,
    ):
        self.dataset, self.workers, self.device = dataset, workers, device
        self.pin_memory, self.prefetch_factor, self.mp_context = pin_memory, prefetch_factor, mp_context
        self.tasks, self.probs, self.sources = tasks, probs, tuple(probs)
        self.classes, self.config = classes, config
        self.skipped = 0
        self.epoch = 0

    @property
    def infinite(self) -> bool:
        return isinstance(self.dataset, TrainStream)

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass epoch ``epoch`` (training: its streams; resume a run with it)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        """Batches per rank of the evaluation pass (equal on every rank)."""
        if self.infinite:
            raise TypeError("a training loader is endless: count steps, not batches")
        return self.dataset.num_batches(max(1, self.workers))

    def __iter__(self) -> Iterator[dict]:
        if self.infinite:
            self.dataset.epoch = self.epoch
        self.epoch += 1
        workers = self.workers
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_size=None,
            collate_fn=_no_collate,
            num_workers=workers,
            pin_memory=self.pin_memory,
            prefetch_factor=self.prefetch_factor if workers else None,
            multiprocessing_context=self.mp_context if workers else None,
        )
        batches_in = iter(loader)
        try:
            for batch in batches_in:
                self.skipped += batch["skipped"]
                if self.device is not None:
                    batch = to_device(batch, self.device)
                yield expand(batch)  # the contract's dtypes, on the device when there is one
        finally:
            # Stop the workers when the consumer stops (a `break` after N steps, an exception),
            # not whenever the garbage collector reaches the iterator: an endless stream's
            # workers would otherwise keep decoding, and shutting them down late blocks
            # whichever code happens to trigger the collection.
            shutdown = getattr(batches_in, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()


# ---- build_loader ----------------------------------------------------------------------------


def dist_info(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """(rank, world size): as given, else from torch.distributed when initialized, else from the
    ``RANK`` / ``WORLD_SIZE`` environment (torchrun sets them), else (0, 1).

    Raises:
        MtlDataError: not ``0 <= rank < world_size``.
    """
    if rank is None or world_size is None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            found = torch.distributed.get_rank(), torch.distributed.get_world_size()
        elif "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            found = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        else:
            found = 0, 1
        rank = found[0] if rank is None else rank
        world_size = found[1] if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise MtlDataError(f"rank {rank} is not in 0..world_size-1 (world_size {world_size})")
    return int(rank), int(world_size)


def default_workers() -> int:
    """min(4, CPUs this process may use)."""
    return min(4, usable_cpus())


#: frame t and at most 3 previous frames (``mtl-data ingest --prev-frames`` stores up to 3)
MAX_FRAMES = 4


@dataclass(frozen=True)
class LoaderConfig:
    """What the loader streams and how: one section of the training configuration.

    The sizes of class-dependent targets (the YOLO grid's one-hot length) are not here: they
    come from the shards' ``classes.json`` (``Loader.classes``), so shards ingested with
    ``--taxonomy native`` load as they are.

    Attributes:
        split: ``train``, ``val`` or ``test``.
        tasks: the tasks batches carry; None = every task labelled by a selected source. Sources
            that label none of them are left out (logged); samples that label none of them are
            not loaded.
        mix: per-source ratios ``{"kitti": 0.3, "a2d2": 0.7}``, ``"proportional"`` (None: the
            same) or ``"STATS.json#ALPHA"`` (``mixing`` module). In evaluation it only selects
            sources (those with a positive ratio); every sample of them is seen once.
        batch_size: samples per batch (the last evaluation batch of a worker may be shorter).
        image_size: (H, W) of images and dense labels.
        seed: seeds every random choice; the same seed, world size and ``workers`` give the
            same batches.
        workers: DataLoader worker processes; 0 = in this process; None = ``default_workers()``.
        infinite: True = endless resampled training stream; False = one evaluation pass.
        augment: flips and photometric jitter; None = ``infinite``.
        letterbox, flip_p, jitter: ``transforms.TransformConfig``.
        grid, anchors, max_boxes, max_lanes, lane_rows: ``targets.TargetConfig`` (the YOLO grid,
            the padded raw boxes, the padded lane polylines).
        shuffle_buffer: raw samples buffered per source and worker for shuffling (training).
        reduced_decode: decode JPEGs at 1/2, 1/4 or 1/8 size in the DCT domain when the
            training size allows it (``decode``); False = always full size.
        shared_ring: worker processes write the dense arrays of their batches into
            ``prefetch_factor + 2`` reused shared-memory slots (``stages.BatchRing``) instead of
            having torch copy each batch into fresh shared memory; False = torch's way.
        jpeg_decoder: ``auto`` (simplejpeg when installed, else OpenCV), ``opencv`` or
            ``simplejpeg`` (``jpeg`` module: the same pixels, simplejpeg 1-10 % faster).
        pin_memory: pin batches in page-locked memory; None = when CUDA is available.
        prefetch_factor: batches in flight per worker.
        mp_context: multiprocessing start method of the workers; None = torch's default.
        frames: frames per sample: 1 = frame t alone; N + 1 adds its N previous frames (members
            ``prev1`` .. ``prevN``, ``mtl-data ingest --prev-frames``) as ``image_prev`` (B, N,
            3, H, W) and ``prev_present`` (B, N), under the same resize, flip and colour jitter
            as frame t; a sample without one gets zeros and False (MultiNet++ two-frame input).

    Raises:
        MtlDataError: a value out of range (on construction).
    """

    split: str = "train"
    tasks: tuple[str, ...] | None = None
    mix: str | Mapping[str, float] | None = None
    batch_size: int = 16
    image_size: tuple[int, int] = (256, 512)
    seed: int = 0
    workers: int | None = None
    infinite: bool = True
    augment: bool | None = None
    letterbox: bool = False
    flip_p: float = 0.5
    jitter: float = 0.2
    grid: int = 8
    anchors: int = 10
    max_boxes: int = 64
    max_lanes: int = 8
    lane_rows: int = 64
    shuffle_buffer: int = SHUFFLE_BUFFER
    reduced_decode: bool = True
    shared_ring: bool = True
    jpeg_decoder: str = "auto"
    pin_memory: bool | None = None
    prefetch_factor: int = 2
    mp_context: str | None = None
    frames: int = 1

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise MtlDataError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.seed < 0:
            raise MtlDataError(f"seed must be >= 0, got {self.seed}")
        if self.workers is not None and self.workers < 0:
            raise MtlDataError(f"workers must be >= 0 (0 = load in this process), got {self.workers}")
        if not 1 <= self.frames <= MAX_FRAMES:
            raise MtlDataError(
                f"frames must be 1 to {MAX_FRAMES} (frame t and up to {MAX_FRAMES - 1} previous), got {self.frames}"
            )
        object.__setattr__(self, "tasks", _requested_tasks(self.tasks))
        object.__setattr__(self, "image_size", tuple(int(v) for v in self.image_size))


def _requested_tasks(tasks: Collection[str] | None) -> tuple[str, ...] | None:
    if tasks is None:
        return None
    if isinstance(tasks, str):
        tasks = [tasks]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise MtlDataError(
            f"tasks {list(tasks)!r}: {'unknown ' + ', '.join(unknown) if unknown else 'empty'}; "
            f"choose from {', '.join(TASKS)}"
        )
    return tuple(t for t in TASKS if t in tasks)


def shard_classes(shard_set: ShardSet, sources: Collection[str], tasks: Collection[str]) -> dict[str, tuple[str, ...]]:
    """Class names of each class-based task, from the ``classes.json`` of the sources that label it.

    Sources that label a task must name its classes identically (one head serves them all):
    shards of one taxonomy do; a source ingested with ``--taxonomy native`` next to unified ones
    does not, and is refused.

    Raises:
        MtlDataError: a labelling source without its table, or two sources that disagree.
    """
    rows = shard_set.manifest
    out: dict[str, tuple[str, ...]] = {}
    first: dict[str, str] = {}
    for source in sorted(sources):
        tables = shard_set.class_tables(source)
        mine = rows.filter(pl.col("source") == source)
        for task in tasks:
            if task not in CLASS_TASKS or not mine[f"has_{task}"].any():
                continue
            names = tables.get(task)
            if not names:
                raise MtlDataError(
                    f"{shard_set.root / source / 'classes.json'}: no {task!r} class names although "
                    f"{source} labels {task}; re-run its ingest with --overwrite"
                )
            names = tuple(names)
            if task in out and out[task] != names:
                raise MtlDataError(
                    f"sources {first[task]} and {source} name their {task} classes differently "
                    f"({len(out[task])} vs {len(names)} classes; one was ingested with another "
                    "--taxonomy): load them apart or re-ingest them with one taxonomy"
                )
            out.setdefault(task, names)
            first.setdefault(task, source)
    return out


def build_loader(
    shards: str | Path,
    config: LoaderConfig | None = None,
    *,
    rank: int | None = None,
    world_size: int | None = None,
    device: str | torch.device | None = None,
    **options,
) -> Loader:
    """A loader of batches from a shards root (design.md section 6; module docstring).

    ``build_loader(root, LoaderConfig(batch_size=16, ...))``, or the keyword form
    ``build_loader(root, batch_size=16, image_size=(256, 512), ...)`` with ``LoaderConfig``'s
    fields (given together, the keywords override the config's fields).

    Args:
        shards: a shards root (``shards/``, one folder per source) or one source folder.
        config: what to stream (``LoaderConfig``).
        rank, world_size: this process's place among the data-parallel ranks; None =
            ``dist_info`` (torch.distributed, else RANK / WORLD_SIZE, else 0 / 1).
        device: move every batch there (``non_blocking``, from pinned memory), e.g. "cuda".
        options: ``LoaderConfig`` fields.

    Returns:
        The ``Loader``; ``loader.classes`` holds the class names of each class-based task.

    Raises:
        MtlDataError: no manifest under ``shards``, unknown tasks, sources or options, a bad
            ``mix``, no sample left in the split, sources whose class tables disagree, or a bad
            rank / world size.
    """
    try:
        config = LoaderConfig(**options) if config is None else dataclasses.replace(config, **options)
    except TypeError as exc:
        known = ", ".join(f.name for f in dataclasses.fields(LoaderConfig))
        raise MtlDataError(f"build_loader: {exc}; the options are {known}") from None
    c = config
    rank, world_size = dist_info(rank, world_size)
    workers = default_workers() if c.workers is None else int(c.workers)
    wanted = c.tasks
    shard_set = ShardSet.open(Path(shards))
    rows = shard_set.manifest.filter(pl.col("split") == c.split)
    if rows.height == 0:
        splits = sorted(shard_set.manifest["split"].unique().to_list())
        raise MtlDataError(f"{shards}: no sample in split {c.split!r}; the shards have {', '.join(splits)}")
    # What can be loaded: samples of the split that label a requested task (any task when
    # tasks=None); the mix is over those, sources without any are left out.
    loadable = rows.filter(labels_any(wanted or TASKS))
    counts = {s: loadable.filter(pl.col("source") == s).height for s in shard_set.sources()}
    probs = resolve_mix(c.mix, counts)
    rows = rows.filter(pl.col("source").is_in(list(probs)))
    loadable = loadable.filter(pl.col("source").is_in(list(probs)))
    if wanted is None:
        wanted = tuple(t for t in TASKS if loadable[f"has_{t}"].any())
    classes = shard_classes(shard_set, probs, wanted)

    device = None if device is None else torch.device(device)
    use_cuda = device is not None and device.type == "cuda"
    pin = torch.cuda.is_available() if c.pin_memory is None else bool(c.pin_memory)
    try:
        transform = TransformConfig(
            c.image_size,
            letterbox=c.letterbox,
            augment=c.infinite if c.augment is None else c.augment,
            flip_p=c.flip_p,
            jitter=c.jitter,
        )
        # The one-hot length of the grid is the det2d class count of the shards (1 when det2d
        # is not loaded: the grid is then not built at all).
        targets = TargetConfig(
            wanted,
            c.image_size,
            c.grid,
            c.anchors,
            len(classes.get("det2d", ())) or 1,
            c.max_boxes,
            c.max_lanes,
            c.lane_rows,
            c.frames - 1,
        )
    except ValueError as exc:
        raise MtlDataError(str(exc)) from None
    settings = Settings(
        tasks=wanted,
        transform=transform,
        targets=targets,
        batch_size=c.batch_size,
        seed=c.seed,
        rank=rank,
        world_size=world_size,
        reduced_decode=c.reduced_decode,
        # prefetch_factor batches ahead of the one handed out, + 1 being widened, + 1 spare
        ring_slots=c.prefetch_factor + 2 if c.shared_ring else 0,
        jpeg_decoder=resolve_backend(c.jpeg_decoder),
        prev_frames=c.frames - 1,
    )
    if c.infinite:
        dataset: TrainStream | EvalPass = TrainStream(
            settings,
            [_source_shards(shard_set.root, rows, s, wanted) for s in probs],
            list(probs.values()),
            c.shuffle_buffer,
        )
    else:
        dataset = _eval_pass(settings, shard_set.root, loadable)
        probs = {s: counts[s] / loadable.height for s in probs}
    logger.info(
        "loader %s split %r: tasks %s; sources %s; rank %d/%d, %d worker(s)",
        "train" if c.infinite else "eval",
        c.split,
        ", ".join(wanted),
        ", ".join(f"{s} {p:.3f}" for s, p in probs.items()),
        rank,
        world_size,
        workers,
    )
    return Loader(
        dataset,
        workers=workers,
        device=device,
        pin_memory=pin or use_cuda,
        prefetch_factor=c.prefetch_factor,
        mp_context=c.mp_context,
        tasks=wanted,
        probs=probs,
        classes=classes,
        config=c,
    )


def _source_shards(root: Path, rows: pl.DataFrame, source: str, tasks: tuple[str, ...]) -> SourceShards:
    mine = rows.filter(pl.col("source") == source)
    per_shard = mine.group_by("shard").len()
    counts = {str(root / shard): n for shard, n in per_shard.iter_rows()}
    drop = frozenset(mine.filter(~labels_any(tasks))["key"].to_list())
    return SourceShards(source, tuple(sorted(counts)), counts, drop)


def _eval_pass(settings: Settings, root: Path, rows: pl.DataFrame) -> EvalPass:
    rows = rows.sort("source", "shard", "position")
    urls = sorted(rows["shard"].unique().to_list())
    index = {u: i for i, u in enumerate(urls)}
    return EvalPass(
        settings,
        [str(root / u) for u in urls],
        [index[u] for u in rows["shard"].to_list()],
        rows["offset"].to_list(),
        rows["position"].to_list(),
        rows["key"].to_list(),
    )
