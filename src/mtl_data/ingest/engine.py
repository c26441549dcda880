"""The ingest engine: raw frames -> shards, in parallel, deterministic, resumable.

Output of one source (``OUT/<source>/``)::

    <split>-000000.tar ...   shards, samples in frame order, members adjacent
    manifest.parquet         one row per sample, written last (its presence = complete)
    classes.json             class names of each task's ids
    rejects.jsonl            frames skipped under --on-error skip, with the reason
    ingest.json              tool version, options, root, counts, shard sizes, time
    .ingest/                 resume state while an ingest runs (removed when complete)
    ingest.lock              while a run holds the folder (``ingest_lock``; removed at its end)
    .partitions/I-of-N/      array jobs' output (``--partition I/N``) until they are merged

How a run proceeds, per split: frames are listed and sorted by the converter; they are converted
by a pool (``EXECUTORS``: local worker processes, or Ray tasks with ``--engine ray``) and
consumed **in order** by this process, which alone writes: the output depends on neither the
worker count nor the engine.
A shard is written under ``.ingest/`` and renamed into place when full, after a sidecar
``.ingest/<split>-NNNNNN.json`` has recorded its manifest rows, its rejects and how many frames
it consumed. A re-run with the same options skips every shard that has both, and continues
with the next frame: no sample is lost or duplicated after a crash or ``kill -9``. When all
requested splits are done the manifest is (re)written from the sidecars plus the rows of the
splits that were already complete, and ``.ingest/`` is removed. ``ingest.json`` records each
shard's size: a re-run finds a complete split whose shard is missing or has another size
(truncated by a copy, deleted) and rebuilds that split.

A write that fails (disk full, read-only folder) is one ``OutputError`` naming the file; the
temporary file is deleted and the finished shards are kept, so the same command resumes.
Two runs never write one source folder at once: ``ingest_lock``.

Array jobs (``--partition I/N``): job I converts the I-th contiguous range of each split's
frame list (``partition_range``) into ``.partitions/I-of-N/``, a folder of the same kind
(chunk tars, sidecars under its own ``.ingest/``, so a killed job resumes) completed by a
``partition.json``; it never touches the final shards. ``merge_partitions`` then feeds every
partition's samples, in frame order, through the single run's writer (``_write_results``) and
``_finalize``: shard boundaries, names, offsets and every file are a single run's, byte for byte.
"""

from __future__ import annotations

import collections
import contextlib
import json
import multiprocessing
import os
import re
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from mtl_data import __version__
from mtl_data.errors import InputError, MtlDataError, OutputError
from mtl_data.files import make_dirs, write_atomic, writing
from mtl_data.ingest.layout import check_utf8_names
from mtl_data.ingest.registry import Converter, Frame
from mtl_data.ingest.resize import resize_sample
from mtl_data.procs import tune_worker_process
from mtl_data.raysession import ray_get, ray_session
from mtl_data.schema.sample import MAX_PREV_FRAMES, TASKS
from mtl_data.schema.validate import SPLITS, validate
from mtl_data.shards.codec import encode_sample
from mtl_data.shards.manifest import MANIFEST_NAME, read_manifest, rows_to_table, sample_row, write_table
from mtl_data.shards.tario import TarShardWriter, iter_tar_samples

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock, runs are not locked
    fcntl = None

STATE_DIR = ".ingest"
LOCK_NAME = "ingest.lock"
PARTITIONS_DIR = ".partitions"
PARTITION_JSON = "partition.json"
ON_ERROR = ("fail", "skip")
_SIZE_UNITS = {"": None, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


@dataclass(frozen=True)
class ShardSize:
    """When to close a shard: after ``count`` samples, or once it holds ``bytes`` bytes."""

    count: int | None = None
    bytes: int | None = None

    @classmethod
    def parse(cls, text: str) -> ShardSize:
        """``"1000"`` = 1000 samples per shard; ``"256MB"``, ``"1GiB"`` = a size in bytes."""
        m = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", str(text))
        unit = m.group(2).upper() if m else None
        if not m or unit not in _SIZE_UNITS or int(m.group(1)) <= 0:
            raise MtlDataError(f"--shard-size {text!r}: expected a sample count (1000) or a size (256MB, 1GB, 512MiB)")
        n = int(m.group(1))
        return cls(count=n) if _SIZE_UNITS[unit] is None else cls(bytes=n * _SIZE_UNITS[unit])

    def full(self, writer: TarShardWriter) -> bool:
        return (self.count is not None and writer.count >= self.count) or (
            self.bytes is not None and writer.size >= self.bytes
        )


@dataclass(frozen=True)
class IngestOptions:
    """Options common to every converter (``mtl-data ingest DATASET --help``)."""

    splits: tuple[str, ...] | None = None  # None = every split present
    limit: int | None = None  # at most this many frames per split
    image_format: str = "jpg"
    jpeg_quality: int = 95
    max_side: int | None = None
    shard_size: ShardSize = field(default_factory=lambda: ShardSize(bytes=256 * 10**6))
    on_error: str = "fail"
    overwrite: bool = False
    workers: int = 1
    partition: tuple[int, int] | None = None  # (I, N): convert only the I-th of N frame ranges
    engine: str = "local"  # where frames are converted: a key of EXECUTORS
    address: str | None = None  # --engine ray: the cluster to join (None: a local Ray instance)
    prev_frames: int = 0  # previous frames t-1 .. t-N per sample (members prev1 .. prevN), N <= 3

    def __post_init__(self):
        if not 0 <= self.prev_frames <= MAX_PREV_FRAMES:
            raise ValueError(f"--prev-frames must be in [0, {MAX_PREV_FRAMES}], got {self.prev_frames}")

    def output_fields(self) -> dict:
        """The options that change the bytes of a split's output (not workers, splits, ...).

        ``prev_frames`` is listed only when not 0: outputs written before the option existed hold
        no previous frames, and their recorded options must still equal a re-run's.
        """
        fields = {
            "limit": self.limit,
            "image_format": self.image_format,
            "jpeg_quality": self.jpeg_quality,
            "max_side": self.max_side,
            "shard_size": asdict(self.shard_size),
        }
        if self.prev_frames:
            fields["prev_frames"] = self.prev_frames
        return fields


@dataclass
class SplitPlan:
    """What a run will do for one split."""

    split: str
    frames: list[Frame]
    status: str = "todo"  # todo | resume | complete
    start: int = 0  # first frame index still to convert
    next_shard: int = 0
    damage: str | None = None  # why a complete split is rebuilt (a shard missing or truncated)


@dataclass
class Plan:
    converter: Converter
    out_dir: Path
    options: IngestOptions
    fingerprint: dict
    splits: list[SplitPlan]

    @property
    def remaining(self) -> int:
        """Frames still to convert in this run."""
        return sum(len(s.frames) - s.start for s in self.splits if s.status != "complete")


class LockHeld(MtlDataError):
    """Another run holds a source folder (``ingest_lock``)."""


@dataclass(frozen=True)
class RecordedSource:
    """What ``_finalize`` needs of a converter, as a partition recorded it (``merge_partitions``)."""

    name: str
    root: Path
    classes: dict

    def class_tables(self) -> dict:
        return self.classes


@dataclass
class FrameResult:
    """What a worker sends back for one frame: encoded members and row, or a rejection."""

    frame_id: str
    key: str | None = None
    members: list[tuple[str, bytes]] | None = None
    row: dict | None = None
    error: InputError | None = None
    notes: dict[str, int] = field(default_factory=dict)


# ---- locking ----------------------------------------------------------------------------------


@contextlib.contextmanager
def ingest_lock(out_dir: Path) -> Iterator[None]:
    """Hold the source folder ``out_dir`` (``OUT/<source>``) for one run: plan and run under it.

    An exclusive ``fcntl.flock`` on ``out_dir/ingest.lock``, whose text says who holds it (pid,
    host, start time). The kernel releases a flock when its process ends, however it ends, so a
    lock file left behind by a killed run never blocks the next one. On release the file is
    deleted, and so are the folders the lock created, if nothing else was written into them.

    Raises:
        MtlDataError: another run holds the folder (naming it, and what to do).
        OutputError: the folder or the lock file cannot be written.
    """
    out_dir = Path(out_dir)
    created = [p for p in (out_dir, *out_dir.parents) if not p.exists()]  # deepest first
    make_dirs(out_dir)
    path = out_dir / LOCK_NAME
    fd = _acquire(path)
    try:
        with writing(path):
            os.ftruncate(fd, 0)
            since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            os.write(fd, f"pid {os.getpid()}\nhost {socket.gethostname()}\nsince {since}\n".encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # before unlocking: a run that opened this file sees it was replaced
        os.close(fd)
        for folder in created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty: a layout error leaves no trace


def _acquire(path: Path) -> int:
    """Open and flock ``path``; the descriptor. Raises MtlDataError naming the holder when held."""
    while True:
        with writing(path):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is None:  # pragma: no cover - no flock on this platform
            return fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(fd)
            os.close(fd)
            raise LockHeld(
                f"{path.parent}: another ingest is writing this folder ({holder}); wait for it to end, "
                f"or stop it and re-run this command, which resumes where it stopped"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise OutputError(path, exc) from exc
        try:  # the holder may have deleted the file between our open and flock: lock the new one
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        mine = os.fstat(fd)
        if current is not None and (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino):
            return fd
        os.close(fd)


def _lock_holder(fd: int) -> str:
    """``pid N on host H, since T`` from a held lock file's text."""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        fields = dict(line.split(" ", 1) for line in os.pread(fd, 4096, 0).decode().splitlines() if " " in line)
        if {"pid", "host", "since"} <= set(fields):
            return f"pid {fields['pid']} on host {fields['host']}, since {fields['since']}"
    return "it has not written its pid yet"


# ---- planning ---------------------------------------------------------------------------------


def plan_ingest(converter: Converter, out_root: Path, options: IngestOptions) -> Plan:
    """Check the layout, list frames, and compare with what ``out_root`` already holds.

    Raises:
        LayoutError: the raw root does not match the converter's layout.
        MtlDataError: no frames for a requested split; or the output was (or is being) built
            with different options and ``--overwrite`` was not given.
    """
    converter.check_layout()
    out_dir = Path(out_root) / converter.name
    fingerprint = {
        "converter": converter.name,
        "root": str(converter.root.resolve()),
        "taxonomy": converter.taxonomy,
        "converter_options": converter.options_dict(),
        "options": options.output_fields(),
    }
    by_split: dict[str, list[Frame]] = collections.defaultdict(list)
    for frame in converter.frames():
        by_split[frame.split].append(frame)
    wanted = options.splits or tuple(s for s in SPLITS if by_split[s])
    for split in wanted:
        if not by_split[split]:
            present = ", ".join(s for s in SPLITS if by_split[s]) or "none"
            raise MtlDataError(f"{converter.root}: no {split!r} frames found (splits present: {present})")
    plans = [SplitPlan(s, by_split[s][: options.limit] if options.limit else by_split[s]) for s in wanted]
    if options.on_error == "fail":  # before anything is written (under skip: a reject, process_frame)
        for sp in plans:
            for frame in sp.frames:
                check_utf8_names(frame)

    done = _read_json(out_dir / "ingest.json") if (out_dir / MANIFEST_NAME).exists() else None
    if options.partition is not None:
        if done and not options.overwrite and done["fingerprint"] != fingerprint:
            raise MtlDataError(
                f"{out_dir} was built with different options "
                f"({'; '.join(_diff(done['fingerprint'], fingerprint))}); re-run with "
                f"the same options, or pass --overwrite to rebuild"
            )
        merged = done and not options.overwrite and set(wanted) <= set(done["splits"])
        # merged already (this job's folder holds at most the lock its run just took): nothing to do
        if merged and not (partition_dir(out_dir, *options.partition) / STATE_DIR).exists():
            for sp in plans:
                sp.status = "complete"
            return Plan(converter, out_dir, options, fingerprint, plans)
        _check_other_partitions(out_dir, fingerprint, *options.partition)
        out_dir = partition_dir(out_dir, *options.partition)
        for sp in plans:
            start, end = partition_range(len(sp.frames), *options.partition)
            sp.frames = sp.frames[start:end]
        done = _read_json(out_dir / PARTITION_JSON)
    running = _read_json(out_dir / STATE_DIR / "run.json")
    if options.overwrite:
        # Rebuilding some splits with new options must not leave others built with the old ones.
        others = sorted(set((done or {}).get("splits", {})) - set(wanted), key=SPLITS.index)
        if done and done["fingerprint"] != fingerprint and others:
            raise MtlDataError(
                f"{out_dir}: splits {', '.join(others)} were built with other options "
                f"({'; '.join(_diff(done['fingerprint'], fingerprint))}); rebuild them too "
                f"(drop --split) or write to another --to folder"
            )
    else:
        for prev, verb in ((done, "was built"), (running, "is being built (interrupted run)")):
            if prev and prev["fingerprint"] != fingerprint:
                raise MtlDataError(
                    f"{out_dir} {verb} with different options "
                    f"({'; '.join(_diff(prev['fingerprint'], fingerprint))}); re-run with "
                    f"the same options, or pass --overwrite to rebuild"
                )
        for sp in plans:
            if done and sp.split in done["splits"]:
                sp.damage = _damaged_shard(out_dir, sp.split, done.get("shard_bytes"))
                sp.status = "complete" if sp.damage is None else "todo"
            elif running and sp.split in running["splits"]:
                sp.status, sp.start, sp.next_shard = _resume_point(out_dir, sp.split, len(sp.frames))
    return Plan(converter, out_dir, options, fingerprint, plans)


def partition_range(frames: int, index: int, count: int) -> tuple[int, int]:
    """Frame indices [start, end) of partition ``index`` of ``count`` of a split of ``frames``
    frames: contiguous ranges in frame order whose sizes differ by at most one."""
    return index * frames // count, (index + 1) * frames // count


def partition_dir(out_dir: Path, index: int, count: int) -> Path:
    """Where partition ``index`` of ``count`` of the source folder ``out_dir`` is written."""
    return Path(out_dir) / PARTITIONS_DIR / f"{index}-of-{count}"


def _check_other_partitions(out_dir: Path, fingerprint: dict, index: int, count: int) -> None:
    """Refuse a partition whose count or options differ from those already under ``out_dir``."""
    others = _partition_counts(out_dir) - {str(count)}
    if others:
        existing = ", ".join(sorted(others))
        raise MtlDataError(
            f"{out_dir / PARTITIONS_DIR} holds partitions of {existing}, not {count}: use --partition I/{existing}, "
            f"or delete that folder to start over with {count}"
        )
    for other in range(count):
        folder = partition_dir(out_dir, other, count)
        prev = _read_json(folder / PARTITION_JSON) or _read_json(folder / STATE_DIR / "run.json")
        if other != index and prev and prev["fingerprint"] != fingerprint:
            raise MtlDataError(
                f"{out_dir}: partition {other}/{count} was built with other options "
                f"({'; '.join(_diff(prev['fingerprint'], fingerprint))}); give every partition the same options"
            )


def _damaged_shard(out_dir: Path, split: str, shard_bytes: dict[str, int] | None) -> str | None:
    """What is wrong with the first shard of a complete split that is missing or does not have
    the size ``ingest.json`` recorded; None when all are intact (or no sizes were recorded)."""
    for name, size in (shard_bytes or {}).items():
        if not name.startswith(f"{split}-"):
            continue
        try:
            actual = (out_dir / name).stat().st_size
        except FileNotFoundError:
            return f"{name} is missing"
        if actual != size:
            return f"{name} has {actual:,} bytes, {size:,} when it was written"
    return None


def _diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return out


def _shard_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}"


def _resume_point(out_dir: Path, split: str, frames: int) -> tuple[str, int, int]:
    """(status, first frame to convert, next shard index) from the sidecars of a split."""
    state = out_dir / STATE_DIR
    if (state / f"{split}.done").exists():
        return "resume", frames, 0  # every frame converted; only the manifest is missing
    start = index = 0
    while True:
        side = _read_json(state / f"{_shard_name(split, index)}.json")
        if side is None or (side["shard"] is not None and not (out_dir / side["shard_file"]).exists()):
            break
        start, index = side["frames_end"], index + 1
    return "resume", start, index


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def _write_json(path: Path, obj, **kwargs) -> None:
    write_atomic(path, json.dumps(obj, **kwargs))


# ---- conversion (runs in workers) -------------------------------------------------------------


def process_frame(converter: Converter, options: IngestOptions, frame: Frame) -> FrameResult:
    """Convert, add the previous frames, resize, validate and encode one frame. Bad input becomes
    a rejected result."""
    try:
        check_utf8_names(frame)
        sample = converter.convert(frame)
        if options.prev_frames:
            sample = converter.add_previous_frames(frame, sample, options.prev_frames)
        sample = resize_sample(sample, options.max_side)
        num_det = len(converter.class_tables().get("det2d", [])) or None
        problems = validate(sample, num_det)
        if problems:
            raise InputError(frame.primary_path, f"converted sample breaks the schema: {'; '.join(problems)}")
        members = encode_sample(sample, options.image_format, options.jpeg_quality)
        return FrameResult(frame.id, sample.key, members, sample_row(sample), notes=sample.notes)
    except InputError as exc:
        return FrameResult(frame.id, error=exc)


_WORKER: tuple[Converter, IngestOptions] | None = None


def _init_worker(converter: Converter, options: IngestOptions) -> None:
    global _WORKER
    _WORKER = (converter, options)
    tune_worker_process()


def _work(frames: list[Frame]) -> list[FrameResult]:
    return [process_frame(*_WORKER, frame) for frame in frames]


_WORKER_CONTEXT = None  # the ObjectRef id _WORKER was fetched from (a Ray worker process)


def _work_in(context: list, fn: Callable, frames: list[Frame]) -> list[FrameResult]:
    """``fn(frames)`` in a Ray worker process; ``context`` is ``[ObjectRef of (converter,
    options)]``. The ref is wrapped in a list so that Ray passes it unresolved: the worker
    fetches and unpickles the converter once per run, not per task, so its per-process caches
    (A2D2's undistortion maps: 12 ms) carry over from task to task as in a local worker."""
    global _WORKER, _WORKER_CONTEXT
    import ray

    ref = context[0]
    if _WORKER_CONTEXT != ref.hex():
        if _WORKER is None:
            tune_worker_process()
        _WORKER, _WORKER_CONTEXT = ray.get(ref), ref.hex()
    return fn(frames)


def _local_pool(converter: Converter, options: IngestOptions) -> ProcessPoolExecutor:
    """``--engine local``: ``options.workers`` processes of this machine."""
    return ProcessPoolExecutor(
        options.workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(converter, options),
    )


class RayPool:
    """``--engine ray``: tasks run as Ray tasks, on a local Ray instance of ``options.workers``
    CPUs or on the cluster at ``options.address`` (``raysession.ray_session``); the pool
    interface ``_ordered_results`` uses (``submit(fn, frames)`` -> a future, ``shutdown``), plus
    ``window``, the tasks to keep in flight (a few per CPU of the cluster).

    Ray is started (or joined) once per run and shut down at its end only if this run started
    it; the converter and options go to the object store once. A task returns the same
    ``FrameResult`` objects as a local worker, so the driver writes the same bytes; an exception
    raised in a task is re-raised as itself, not wrapped in Ray's ``RayTaskError``.
    """

    def __init__(self, converter: Converter, options: IngestOptions):
        self._session = contextlib.ExitStack()  # Ray, held until ``shutdown``
        ray = self.ray = self._session.enter_context(ray_session(options.address, options.workers))
        self.window = 4 * max(1, int(ray.cluster_resources().get("CPU", options.workers)))
        self.remote = ray.remote(num_cpus=1)(_work_in)
        self.context = ray.put((converter, options))
        self.pending: set[_RayFuture] = set()

    def submit(self, fn: Callable, frames: list[Frame]) -> _RayFuture:
        future = _RayFuture(self, self.remote.remote([self.context], fn, frames))
        self.pending.add(future)
        return future

    def shutdown(self, cancel_futures: bool = False) -> None:
        if cancel_futures:  # the tasks of a run that failed: nobody will read them
            for future in self.pending:
                with contextlib.suppress(Exception):
                    self.ray.cancel(future.ref)
        self.pending.clear()
        self._session.close()


@dataclass(eq=False)
class _RayFuture:
    pool: RayPool
    ref: object  # ray.ObjectRef

    def result(self) -> list[FrameResult]:
        self.pool.pending.discard(self)
        return ray_get(self.pool.ray, self.ref)


#: where frames are converted (``--engine``): a function (converter, options) -> a pool with
#: ``submit(fn, frames)`` -> a future, ``shutdown(cancel_futures=True)`` and optionally ``window``
EXECUTORS: dict[str, Callable] = {"local": _local_pool, "ray": RayPool}


def _ordered_results(
    converter: Converter, options: IngestOptions, frames: list[Frame], pool: ProcessPoolExecutor | RayPool | None
) -> Iterator[FrameResult]:
    """Results in frame order; at most a few tasks per worker in flight, so memory stays bounded.

    A task is ``converter.frames_per_task`` consecutive frames. Without a pool the frames are
    converted in this process.
    """
    if pool is None:
        for frame in frames:
            yield process_frame(converter, options, frame)
        return
    size = max(1, converter.frames_per_task)
    tasks = (frames[i : i + size] for i in range(0, len(frames), size))
    window = collections.deque()
    for task in tasks:
        window.append(pool.submit(_work, task))
        if len(window) >= getattr(pool, "window", 4 * options.workers):
            break
    while window:
        results = window.popleft().result()
        nxt = next(tasks, None)
        if nxt is not None:
            window.append(pool.submit(_work, nxt))
        yield from results


# ---- writing ----------------------------------------------------------------------------------


def run_ingest(plan: Plan, progress: Callable[[int], None] | None = None) -> dict:
    """Execute a plan; returns the ``ingest.json`` content.

    Raises:
        InputError: the first bad frame, under ``--on-error fail`` (finished shards are kept,
            so the same command resumes after the input is fixed).
    """
    out_dir, options = plan.out_dir, plan.options
    state = out_dir / STATE_DIR
    todo = _prepare(plan)
    if todo and options.partition is not None:
        with writing(out_dir / PARTITION_JSON):
            (out_dir / PARTITION_JSON).unlink(missing_ok=True)  # complete again only when rewritten
    started = time.time()
    pool = None  # --engine local with one worker: frames are converted in this process
    if plan.remaining and (options.workers > 1 or options.engine != "local"):
        pool = EXECUTORS[options.engine](plan.converter, options)
    try:
        for sp in todo:
            if not (state / f"{sp.split}.done").exists():
                _write_split(plan, sp, pool, progress)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    if options.partition is not None and out_dir.parent.name == PARTITIONS_DIR:
        return _finish_partition(plan, time.time() - started)
    return _finalize(plan, time.time() - started)


def _prepare(plan: Plan) -> list[SplitPlan]:
    """Create the resume state of the splits still to write (and clear those written afresh)."""
    out_dir, options = plan.out_dir, plan.options
    state = out_dir / STATE_DIR
    todo = [sp for sp in plan.splits if sp.status != "complete"]
    if todo:
        make_dirs(out_dir)
        if options.overwrite:
            shutil.rmtree(state, ignore_errors=True)
        for sp in todo:
            if sp.status == "todo":
                _clear_split(out_dir, sp.split)
        make_dirs(state)
        running = _read_json(state / "run.json") or {}
        splits = sorted(set(running.get("splits", [])) | {sp.split for sp in todo}, key=SPLITS.index)
        _write_json(state / "run.json", {"fingerprint": plan.fingerprint, "splits": splits}, indent=1)
    return todo


def _clear_split(out_dir: Path, split: str) -> None:
    """Remove a split's shards and resume state (``--overwrite``, or a fresh start)."""
    state = out_dir / STATE_DIR
    for path in [*out_dir.glob(f"{split}-*.tar"), *state.glob(f"{split}-*"), state / f"{split}.done"]:
        with writing(path):
            path.unlink(missing_ok=True)


def _write_split(plan: Plan, sp: SplitPlan, pool, progress) -> None:
    results = _ordered_results(plan.converter, plan.options, sp.frames[sp.start :], pool)
    _write_results(plan, sp, results, progress)


def _write_results(plan: Plan, sp: SplitPlan, results: Iterator[FrameResult], progress=None) -> None:
    """The ordered results of a split's frames from ``sp.start`` on -> shards and sidecars.

    The one writer of shards: a single run and ``merge_partitions`` both call it.
    """
    out_dir, options = plan.out_dir, plan.options
    state = out_dir / STATE_DIR
    source_dir = out_dir.name
    for stale in [*out_dir.glob(f"{sp.split}-*.tar"), *state.glob(f"{sp.split}-*.tar.part")]:
        if int(stale.name.split("-")[1][:6]) >= sp.next_shard:
            with writing(stale):
                stale.unlink()
    seen = _seen_keys(state, sp.split, sp.next_shard)
    index, writer, rows, rejects, notes = sp.next_shard, None, [], [], collections.Counter()

    def flush(frames_end: int) -> None:
        nonlocal index, writer, rows, rejects, notes
        name = _shard_name(sp.split, index)
        side = {
            "shard": None if writer is None else f"{source_dir}/{name}.tar",
            "shard_file": f"{name}.tar",
            "frames_end": frames_end,
            "rows": rows,
            "rejects": rejects,
            "notes": dict(notes),
        }
        _write_json(state / f"{name}.json", side)  # the sidecar first: a tar never exists without it
        if writer is not None:
            writer.commit()
        index, writer, rows, rejects, notes = index + 1, None, [], [], collections.Counter()

    frames_end = sp.start
    try:
        for i, result in enumerate(results, start=sp.start):
            frames_end = i + 1
            if result.error is not None:
                if options.on_error == "fail":
                    raise result.error
                err = result.error
                path = os.path.abspath(err.path)  # the record must not depend on where the command ran
                rejects.append(
                    {"split": sp.split, "id": result.frame_id, "path": path, "line": err.line, "error": err.message}
                )
            else:
                if result.key in seen:
                    raise MtlDataError(
                        f"{plan.converter.root}: two frames give the key {result.key!r} "
                        f"(keys keep only [A-Za-z0-9_-]); rename one of them"
                    )
                seen.add(result.key)
                notes.update(result.notes)
                if writer is None:
                    name = _shard_name(sp.split, index)
                    writer = TarShardWriter(state / f"{name}.tar.part", out_dir / f"{name}.tar")
                position, offset = writer.add(result.key, result.members)
                result.row.update(
                    shard=f"{source_dir}/{_shard_name(sp.split, index)}.tar", position=position, offset=offset
                )
                rows.append(result.row)
                if options.shard_size.full(writer):
                    flush(i + 1)
            if progress is not None:
                progress(1)
        if writer is not None or rejects:
            flush(frames_end)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    write_atomic(state / f"{sp.split}.done", b"")


def _seen_keys(state: Path, split: str, upto: int) -> set[str]:
    keys = set()
    for index in range(upto):
        side = _read_json(state / f"{_shard_name(split, index)}.json")
        keys.update(r["key"] for r in side["rows"])
    return keys


def _finalize(plan: Plan, elapsed: float) -> dict:
    """Write manifest, rejects, classes and ingest.json; drop the resume state."""
    out_dir = plan.out_dir
    state = out_dir / STATE_DIR
    rebuilt = {sp.split for sp in plan.splits if sp.status != "complete"}
    old = _read_json(out_dir / "ingest.json") if (out_dir / MANIFEST_NAME).exists() else None
    if not rebuilt and old is not None:
        return old
    # Column-wise and in order (split, then shard, then position): memory stays near the
    # manifest's Arrow size even for hundreds of thousands of samples.
    kept = read_manifest(out_dir / MANIFEST_NAME) if old is not None else None
    old_rejects = _read_jsonl(out_dir / "rejects.jsonl") if old is not None else []
    tables, rejects, splits = [], [], {}
    for split in sorted(rebuilt | set((old or {}).get("splits", {})), key=SPLITS.index):
        if split in rebuilt:
            sides = [_read_json(p) for p in sorted(state.glob(f"{split}-*.json"))]
            table = pa.concat_tables([rows_to_table(side["rows"]) for side in sides] or [rows_to_table([])])
            split_rejects = [r for side in sides for r in side["rejects"]]
            notes = sum((collections.Counter(side["notes"]) for side in sides), collections.Counter())
        else:  # a complete split this run did not touch
            table = kept.filter(pc.equal(kept["split"], split))
            split_rejects = [r for r in old_rejects if r["split"] == split]
            notes = old["splits"][split].get("notes", {})
        tables.append(table)
        rejects += sorted(split_rejects, key=lambda r: r["id"])
        splits[split] = {
            "samples": table.num_rows,
            "rejects": len(split_rejects),
            "shards": len(pc.unique(table["shard"])),
            "tasks": {t: int(pc.sum(table[f"has_{t}"]).as_py() or 0) for t in TASKS},
            "notes": dict(sorted(notes.items())),
        }
        if plan.fingerprint["options"].get("prev_frames"):
            splits[split]["prev_frames"] = _prev_frame_counts(table)
    manifest = pa.concat_tables(tables)
    # Sizes of the finished shards: a re-run finds a truncated or deleted one (``_damaged_shard``).
    shard_names = sorted(rel.split("/", 1)[1] for rel in pc.unique(manifest["shard"]).to_pylist())
    shard_bytes = {name: (out_dir / name).stat().st_size for name in shard_names}
    _write_json(out_dir / "classes.json", plan.converter.class_tables(), indent=1)
    write_atomic(out_dir / "rejects.jsonl", "".join(json.dumps(r) + "\n" for r in rejects))
    write_table(manifest, out_dir / MANIFEST_NAME)
    report = {
        "tool": "mtl-data",
        "version": __version__,
        "source": plan.converter.name,
        "root": str(plan.converter.root.resolve()),
        "fingerprint": plan.fingerprint,
        "splits": splits,
        "shard_bytes": shard_bytes,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "elapsed_s": round(elapsed, 3),
        "workers": plan.options.workers,
        "engine": plan.options.engine,
    }
    _write_json(out_dir / "ingest.json", report, indent=1)
    shutil.rmtree(state, ignore_errors=True)
    return report


def _prev_frame_counts(table: pa.Table) -> dict[str, int]:
    """Samples per number of previous frames (``{"2": 40, "1": 3, "0": 1}``, most first)."""
    counts = collections.Counter(table["prev_frames"].to_pylist())
    return {str(k): counts[k] for k in sorted(counts, reverse=True)}


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---- partitions (array jobs) ------------------------------------------------------------------


def _finish_partition(plan: Plan, elapsed: float) -> dict:
    """Mark a partition complete: ``partition.json`` (what a merge needs besides the chunks and
    sidecars, which stay); returns it."""
    out_dir, state = plan.out_dir, plan.out_dir / STATE_DIR
    old = _read_json(out_dir / PARTITION_JSON)
    if old is not None:
        return old
    splits, shard_bytes = {}, {}
    for split in (_read_json(state / "run.json") or {}).get("splits", []):
        sides = [_read_json(p) for p in sorted(state.glob(f"{split}-*.json"))]
        rows = [r for side in sides for r in side["rows"]]
        chunks = [side["shard_file"] for side in sides if side["shard"] is not None]
        shard_bytes.update({name: (out_dir / name).stat().st_size for name in chunks})
        splits[split] = {
            "samples": len(rows),
            "rejects": sum(len(side["rejects"]) for side in sides),
            "shards": len(chunks),
            "tasks": {t: sum(bool(r[f"has_{t}"]) for r in rows) for t in TASKS},
        }
    report = {
        "tool": "mtl-data",
        "version": __version__,
        "source": plan.converter.name,
        "root": str(plan.converter.root.resolve()),
        "partition": list(plan.options.partition),
        "fingerprint": plan.fingerprint,
        "classes": plan.converter.class_tables(),
        "splits": splits,
        "shard_bytes": shard_bytes,
        "elapsed_s": round(elapsed, 3),
    }
    _write_json(out_dir / PARTITION_JSON, report, indent=1)
    return report


def _partition_counts(out_dir: Path) -> set[str]:
    """The N of every ``I-of-N`` folder under ``out_dir/.partitions``."""
    return {p.name.split("-of-")[1] for p in (Path(out_dir) / PARTITIONS_DIR).glob("*-of-*")}


def _partition_count(out_dir: Path) -> int | None:
    """N of the ``I-of-N`` folders under ``out_dir/.partitions``; None when there are none."""
    counts = _partition_counts(out_dir)
    if len(counts) > 1:
        raise MtlDataError(
            f"{out_dir / PARTITIONS_DIR}: partitions of different counts (of {', '.join(sorted(counts))}); "
            f"delete the folders of the count you no longer use"
        )
    return int(counts.pop()) if counts else None


def _complete_partitions(out_dir: Path) -> list[dict]:
    """The ``partition.json`` of every partition, in order; raises naming a missing or a
    mismatching one and what to run."""
    count = _partition_count(out_dir)
    if count is None:
        raise MtlDataError(
            f"{out_dir}: no partitions to merge (no {PARTITIONS_DIR}/ folder); run "
            f"`mtl-data ingest SOURCE RAW --to {out_dir.parent} --partition I/N` for each I first"
        )
    infos = [_read_json(partition_dir(out_dir, i, count) / PARTITION_JSON) for i in range(count)]
    missing = [i for i, info in enumerate(infos) if info is None]
    if missing:
        known = [info["fingerprint"] for info in infos if info] + [
            run["fingerprint"]
            for i in range(count)
            if (run := _read_json(partition_dir(out_dir, i, count) / STATE_DIR / "run.json"))
        ]
        source, root = (known[0]["converter"], known[0]["root"]) if known else ("SOURCE", "RAW")
        raise MtlDataError(
            f"{out_dir}: partition {', '.join(f'{i}/{count}' for i in missing)} of {count} is missing or "
            f"incomplete; run `mtl-data ingest {source} {root} --to {out_dir.parent} --partition {missing[0]}/{count}` "
            f"with the options of the others (it resumes), then `mtl-data merge {out_dir}`"
        )
    for i, info in enumerate(infos[1:], start=1):
        diff = _diff(infos[0]["fingerprint"], info["fingerprint"])
        if set(info["splits"]) != set(infos[0]["splits"]):
            diff.append(f"splits: {', '.join(infos[0]['splits'])} -> {', '.join(info['splits'])}")
        if diff:
            raise MtlDataError(
                f"{out_dir}: partition {i}/{count} was built with other options than 0/{count} "
                f"({'; '.join(diff)}); re-run it with the options of the others and --overwrite"
            )
    return infos


def _partition_results(out_dir: Path, count: int, split: str) -> Iterator[FrameResult]:
    """Every partition's results of ``split`` in frame order, read back from its chunks and
    sidecars (a chunk's notes ride on its first sample; where a reject falls between samples
    does not change the output: rejects close no shard and are sorted by id)."""
    for index in range(count):
        folder = partition_dir(out_dir, index, count)
        for path in sorted((folder / STATE_DIR).glob(f"{split}-*.json")):
            side = _read_json(path)
            samples = iter_tar_samples(folder / side["shard_file"]) if side["shard"] is not None else iter(())
            notes = side["notes"]
            for row, (key, members) in zip(side["rows"], samples, strict=True):
                yield FrameResult(row["id"], key, list(members.items()), row, notes=notes)
                notes = {}
            for r in side["rejects"]:
                yield FrameResult(r["id"], error=InputError(r["path"], r["error"], r["line"]))


def merge_partitions(out_dir: Path) -> dict:
    """Write the shards and manifest of ``out_dir`` (``OUT/<source>``) from its complete
    partitions, exactly as a single run with their options would; returns ``ingest.json``.

    The caller holds ``ingest_lock(out_dir)``. ``.partitions/`` is removed on success.

    Raises:
        MtlDataError: a partition is missing or incomplete, or partitions differ in options.
    """
    out_dir = Path(out_dir)
    infos = _complete_partitions(out_dir)
    first, count = infos[0], len(infos)
    fingerprint = first["fingerprint"]
    splits = sorted(first["splits"], key=SPLITS.index)
    done = _read_json(out_dir / "ingest.json") if (out_dir / MANIFEST_NAME).exists() else None
    others = sorted(set((done or {}).get("splits", {})) - set(splits), key=SPLITS.index)
    if done and done["fingerprint"] != fingerprint and others:
        raise MtlDataError(
            f"{out_dir}: splits {', '.join(others)} were built with other options "
            f"({'; '.join(_diff(done['fingerprint'], fingerprint))}); rebuild them too or merge into another folder"
        )
    source = RecordedSource(first["source"], Path(first["root"]), first["classes"])
    options = IngestOptions(
        splits=tuple(splits), shard_size=ShardSize(**fingerprint["options"]["shard_size"]), on_error="skip"
    )
    plan = Plan(source, out_dir, options, fingerprint, [SplitPlan(split, []) for split in splits])
    started = time.time()
    shutil.rmtree(out_dir / STATE_DIR, ignore_errors=True)  # a merge always starts afresh: it only copies
    _prepare(plan)
    for sp in plan.splits:
        _write_results(plan, sp, _partition_results(out_dir, count, sp.split))
    report = _finalize(plan, time.time() - started)
    shutil.rmtree(out_dir / PARTITIONS_DIR, ignore_errors=True)
    return report


def merge_if_complete(out_dir: Path, count: int) -> dict | None:
    """Merge when all ``count`` partitions of ``out_dir`` are complete (the job that finishes
    last); None when some are not, or another job holds the folder (it is merging)."""
    if any(not (partition_dir(out_dir, i, count) / PARTITION_JSON).exists() for i in range(count)):
        return None
    try:
        with ingest_lock(out_dir):
            if not (Path(out_dir) / PARTITIONS_DIR).exists():  # merged by another job meanwhile
                return None
            return merge_partitions(out_dir)
    except LockHeld:
        return None
