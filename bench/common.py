"""What the benchmarks share: the timing helper every ratio is computed with, arguments, and for the
ingest benchmarks (``bench/ingest_*.py``) one measured ingest, pool start-up, scaling, floors
interleaved with the ingest, the per-stage breakdown of ``engine.process_frame``, hard links for
replicated fixtures and the tables.

**Every ratio is computed on CPU time** (design.md section 7): the machines are shared and wall
time swung 2x within one run. `measure` and `best_of` return a `Timing`: the CPU seconds of this
process (all its threads, ``time.process_time``) plus those of its worker processes that ended
during the call (``resource.getrusage(RUSAGE_CHILDREN)``: the engine's pool is shut down, and its
workers reaped, inside ``run_ingest``), and the wall seconds, printed for information only and
labelled so. Where workers outlive the measured window (the training loader's), `live_children_cpu`
reads their CPU from ``/proc``.

The scripts import it by putting their own folder first on ``sys.path`` (they run as
``python bench/<name>.py`` from the repository root; ``bench`` is not a package).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import math
import os
import resource
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np

from mtl_data.ingest import engine
from mtl_data.ingest.engine import IngestOptions, ShardSize, plan_ingest, run_ingest
from mtl_data.ingest.registry import Converter
from mtl_data.ingest.resize import resize_sample
from mtl_data.schema.validate import validate
from mtl_data.shards.codec import depth_to_uint16, encode_sample
from mtl_data.shards.manifest import sample_row

REPO = Path(__file__).resolve().parents[1]
#: the pieces of ``engine.process_frame``, in its order
STAGES = ("convert", "resize_sample", "validate", "encode_sample", "sample_row")


# ---- timing: CPU time for every ratio, wall time for information ------------------------------


@dataclass(frozen=True)
class Timing:
    """Seconds of one measured call (or the best of several, each field its own minimum).

    Attributes:
        cpu: CPU seconds of this process (all threads) and of the child processes reaped during
            the call; what every ratio is computed on.
        wall: wall-clock seconds; informative only (other load on a shared machine shifts it).
        cpu_self: CPU seconds of this process alone (``cpu`` without the reaped children).
    """

    cpu: float
    wall: float
    cpu_self: float

    def per(self, n: int) -> Timing:
        """The same timing per item, for ``n`` items."""
        return Timing(self.cpu / n, self.wall / n, self.cpu_self / n)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(fn: Callable[[], object]) -> Timing:
    """`Timing` of one ``fn()`` call."""
    wall, cpu, kids = time.perf_counter(), time.process_time(), _children_cpu()
    fn()
    wall, cpu, kids = time.perf_counter() - wall, time.process_time() - cpu, _children_cpu() - kids
    return Timing(cpu + kids, wall, cpu)


def best(timings: list[Timing]) -> Timing:
    """Each field's minimum over ``timings`` (the least disturbed repeat of each)."""
    return Timing(min(t.cpu for t in timings), min(t.wall for t in timings), min(t.cpu_self for t in timings))


def best_of(repeats: int, fn: Callable[[], object]) -> Timing:
    """The best `Timing` of ``fn()`` over ``repeats`` calls."""
    return best([measure(fn) for _ in range(repeats)])


def ratio(floor: Timing, run: Timing) -> float:
    """``floor / run`` on CPU time: the share of the floor's speed that ``run`` reaches."""
    return floor.cpu / run.cpu


def live_children_cpu() -> dict[int, float]:
    """CPU seconds (user + system) of each live child process of this one, from ``/proc``
    (``RUSAGE_CHILDREN`` counts a child only once it has ended and been reaped)."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():  # fields[1] = ppid; utime, stime are fields 11, 12
            out[int(stat.parent.name)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def interleaved(
    repeats: int, floors: dict[str, Callable[[], object]], ingest: Callable[[], dict]
) -> tuple[dict[str, Timing], list[dict]]:
    """Floors and ingest run in turn, repeat by repeat, so that a burst of load from other work
    on the machine hits both sides of a ratio rather than one.

    Returns:
        ``{floor name: best Timing}`` and the ``ingest()`` results of every repeat.
    """
    times: dict[str, list[Timing]] = {k: [] for k in floors}
    runs = []
    for _ in range(repeats):
        for name, fn in floors.items():
            times[name].append(measure(fn))
        runs.append(ingest())
    return {k: best(v) for k, v in times.items()}, runs


# ---- arguments --------------------------------------------------------------------------------


def default_fixtures() -> Path:
    """``$MTL_FIXTURES``, or ``../shared/fixtures`` next to the repository."""
    return Path(os.environ.get("MTL_FIXTURES", REPO.parent / "shared" / "fixtures"))


def parse_size(text: str) -> tuple[int, int]:
    """``"HxW"`` -> ``(H, W)``."""
    h, _, w = text.partition("x")
    return int(h), int(w)


def parser(doc: str, frames: int, scale_factor: int) -> argparse.ArgumentParser:
    """The options every ingest benchmark takes; a script adds its own."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=frames, help="frames for floor, ingest and breakdown")
    ap.add_argument("--repeats", type=int, default=3, help="repeats; the best is reported")
    ap.add_argument("--fixtures", type=Path, default=default_fixtures())
    ap.add_argument("--workers-max", type=int, default=2)
    ap.add_argument(
        "--scale-frames", type=int, default=None, help=f"frames for scaling (default {scale_factor}x --frames)"
    )
    ap.add_argument("--shard-size", type=ShardSize.parse, default=IngestOptions().shard_size)
    return ap


def command_line() -> str:
    """The command that is running, relative to the repository root (printed last)."""
    return " ".join(
        [os.path.relpath(sys.executable, REPO), os.path.relpath(os.path.abspath(sys.argv[0]), REPO), *sys.argv[1:]]
    )


# ---- one ingest, pool start-up, scaling -------------------------------------------------------


def _usage() -> list[resource.struct_rusage]:
    return [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]


class _CountingPool(ProcessPoolExecutor):
    """The engine's pool, counting the worker processes it starts: CPython starts them on demand,
    so a short ingest (GTSRB's 64 frames per task) may start fewer than ``workers``."""

    started = 0

    def _spawn_process(self):
        super()._spawn_process()
        _CountingPool.started += 1


def ingest_once(conv: Converter, out: Path, opts: IngestOptions) -> dict[str, float]:
    """One ingest with ``conv`` (pass a fresh one: its per-process caches are then built in the run).

    Returns seconds: ``plan`` and ``plan_wall`` (CPU and wall of ``plan_ingest``), ``run`` (wall of
    ``run_ingest``, for information); ``cpu``, the CPU of this process and its workers during ``run_ingest``, and the
    minor page faults (``faults``); ``cpu_self``, this process alone, and ``cpu_main_thread``,
    its calling thread alone (the rest of ``cpu_self`` is the pool's helper threads); and (inline
    runs only) ``process_frame``, the CPU spent inside ``process_frame``, timed by wrapping the
    engine's reference to it for the duration of the run; ``workers_started``, the worker
    processes the engine's pool started (its class is swapped for `_CountingPool` likewise).
    """
    plans = []
    t_plan = measure(lambda: plans.append(plan_ingest(conv, out, opts)))
    plan = plans[0]
    inside = [0.0]
    original = engine.process_frame

    def timed(*args):
        t0 = time.process_time()
        try:
            return original(*args)
        finally:
            inside[0] += time.process_time() - t0

    u0, engine.process_frame, engine.ProcessPoolExecutor = _usage(), timed, _CountingPool
    _CountingPool.started = 0
    try:
        t, tt = time.perf_counter(), time.thread_time()
        run_ingest(plan)
        t_run, cpu_thread = time.perf_counter() - t, time.thread_time() - tt
    finally:
        engine.process_frame, engine.ProcessPoolExecutor = original, ProcessPoolExecutor
    u1 = _usage()
    cpu = sum(b.ru_utime + b.ru_stime - a.ru_utime - a.ru_stime for a, b in zip(u0, u1))
    faults = sum(b.ru_minflt - a.ru_minflt for a, b in zip(u0, u1))
    cpu_self = u1[0].ru_utime + u1[0].ru_stime - u0[0].ru_utime - u0[0].ru_stime
    return {
        "plan": t_plan.cpu,
        "plan_wall": t_plan.wall,
        "run": t_run,
        "cpu": cpu,
        "cpu_self": cpu_self,
        "cpu_main_thread": cpu_thread,
        "faults": faults,
        "process_frame": inside[0],
        "workers_started": _CountingPool.started,
    }


def warm_up(conv: Converter, out: Path, opts: IngestOptions) -> None:
    """One untimed ingest of a single frame: what the first ingest of a process pays once (lazy
    imports, first calls into pyarrow and the codecs) stays out of the per-frame figures."""
    run_ingest(plan_ingest(conv, out, dataclasses.replace(opts, limit=1, workers=1, overwrite=True)))


def ingest_timing(runs: list[dict]) -> Timing:
    """The best `Timing` of ``run_ingest`` over `ingest_once` results."""
    return Timing(min(x["cpu"] for x in runs), min(x["run"] for x in runs), min(x["cpu_self"] for x in runs))


@dataclass(frozen=True)
class FloorsAndIngest:
    """What `floors_and_ingest` measured.

    Attributes:
        floors: floor name -> its best `Timing`.
        ingest: the best `Timing` of ``run_ingest``.
        best: the `ingest_once` result with the least CPU.
        runs: every `ingest_once` result.
    """

    floors: dict[str, Timing]
    ingest: Timing
    best: dict[str, float]
    runs: list[dict]


def floors_and_ingest(
    repeats: int,
    floors: dict[str, Callable[[], object]],
    new_converter: Callable[[], Converter],
    out: Path,
    opts: IngestOptions,
) -> FloorsAndIngest:
    """The floors and an inline ingest with a fresh converter each, `interleaved`, after a
    `warm_up`; every ingest writes to ``out / "ingest"``."""
    warm_up(new_converter(), out / "warm", opts)
    times, runs = interleaved(repeats, floors, lambda: ingest_once(new_converter(), out / "ingest", opts))
    return FloorsAndIngest(times, ingest_timing(runs), min(runs, key=lambda x: x["cpu"]), runs)


def pool_startup(conv: Converter, opts: IngestOptions, workers: int, hold: float = 0.5) -> Timing:
    """Spawn + initialize + shut down a pool like the engine's (one task per worker): its
    `Timing`, the workers' CPU included (they are reaped at shutdown), the ``hold`` of each
    task (a sleep) excluded from the wall time."""
    t = measure(lambda: _pool_once(conv, opts, workers, hold))
    return Timing(t.cpu, t.wall - hold, t.cpu_self)


def _pool_once(conv: Converter, opts: IngestOptions, workers: int, hold: float) -> None:
    with ProcessPoolExecutor(
        workers, mp_context=get_context("spawn"), initializer=engine._init_worker, initargs=(conv, opts)
    ) as pool:
        for fut in [pool.submit(time.sleep, hold) for _ in range(workers)]:
            fut.result()


def scaling(
    new_converter: Callable[[], Converter], out: Path, frames: int, args: argparse.Namespace
) -> dict[int, dict[str, float]]:
    """workers -> figures of the best of ``args.repeats`` fresh ingests of ``frames`` frames.

    Keys: ``fps`` and ``fps_ex`` (wall, informative: frames/s, and without the pool's start-up
    and shutdown, measured separately by `pool_startup` and subtracted), ``spawn`` (wall s) and
    ``spawn_cpu`` (CPU s of a separate start-up of as many workers as the ingest started); in CPU
    ms/frame: ``cpu`` (all processes, that start-up CPU subtracted), ``cpu_self`` (the main
    process) and ``cpu_main_thread`` (its calling thread); ``cpu_efficiency``, the inline run's
    ``cpu`` over this one's: the share of the per-frame CPU that stays useful work when it is
    spread over workers (1.0 = the pool adds nothing; wall speed-up on free cores is at most
    workers x this); ``workers_started``.
    """
    res: dict[int, dict[str, float]] = {}
    for w in range(1, args.workers_max + 1):
        o = IngestOptions(limit=frames, shard_size=args.shard_size, overwrite=True, workers=w)
        runs = [ingest_once(new_converter(), out / f"out{w}w", o) for _ in range(args.repeats)]
        run = ingest_timing(runs)
        started = max(x["workers_started"] for x in runs)
        spawn = best([pool_startup(new_converter(), o, started) for _ in range(args.repeats)]) if started else None
        res[w] = {
            "fps": frames / run.wall,
            # nan where the separately measured start-up exceeds the run's wall time (noise, short runs)
            "fps_ex": frames / excl if (excl := run.wall - (spawn.wall if spawn else 0.0)) > 0 else math.nan,
            "spawn": spawn.wall if spawn else 0.0,
            "spawn_cpu": spawn.cpu if spawn else 0.0,
            "workers_started": started,
            "cpu": 1000 * (run.cpu - (spawn.cpu if spawn else 0.0)) / frames,
            "cpu_self": 1000 * run.cpu_self / frames,
            "cpu_main_thread": 1000 * min(x["cpu_main_thread"] for x in runs) / frames,
        }
        res[w]["cpu_efficiency"] = res[1]["cpu"] / res[w]["cpu"]
    return res


# ---- floors and breakdown ---------------------------------------------------------------------


def link(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (a copy where links are not possible)."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def depth_u16(depth: np.ndarray) -> np.ndarray:
    """Depth metres -> the stored uint16, as ``encode_sample`` does it before ``depth.pts``
    (``codec.depth_to_uint16``: rint, the range check, the cast)."""
    return depth_to_uint16(depth)


Tick = Callable[..., object]  # tick(name, fn, *args) -> fn(*args), its CPU time added to `name`


def stage_breakdown(
    conv: Converter, opts: IngestOptions, frames, repeats: int, parts: Callable[[Tick, object], None]
) -> dict[str, float]:
    """CPU seconds per frame of each piece of ``engine.process_frame`` (best of ``repeats``).

    Pass 1 does exactly what ``process_frame`` does, piece by piece (keys `STAGES`). Pass 2 calls
    ``parts(tick, frame)`` for every frame: the benchmark re-does the parts of ``convert`` and
    ``encode_sample`` with the library functions they call, under names of its own (indented
    keys), so that the time can be attributed to a function.
    """
    num_det = len(conv.class_tables().get("det2d", [])) or None  # as process_frame
    out: dict[str, float] = {}
    for _ in range(repeats):
        acc: dict[str, float] = collections.defaultdict(float)

        def tick(name, fn, *args, acc=acc):
            t = time.process_time()
            result = fn(*args)
            acc[name] += time.process_time() - t
            return result

        for f in frames:
            sample = tick("convert", conv.convert, f)
            sample = tick("resize_sample", resize_sample, sample, opts.max_side)
            tick("validate", validate, sample, num_det)
            tick("encode_sample", encode_sample, sample, opts.image_format, opts.jpeg_quality)
            tick("sample_row", sample_row, sample)
        for f in frames:
            parts(tick, f)
        for k, v in acc.items():
            out[k] = min(out.get(k, v), v / len(frames))
    return out


# ---- tables -----------------------------------------------------------------------------------


def print_header(title: str, width: int, extra: str = "", unit: str = "frame") -> None:
    """Title line (with the process settings that matter) and the column heads of a floor table:
    CPU ms per item (what the ratios use), wall ms per item (informative), the CPU-time ratio."""
    print(
        f"\n{title}; {os.cpu_count()} CPUs; "
        f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}, "
        f"cv2 threads {cv2.getNumThreads()}{extra}"
    )
    print(f"{'measurement':<{width}}{'CPU ms/' + unit:>15}{'wall ms (info)':>16}{'ratio':>8}  target")
    print(f"  (ratio = speed against the floor on CPU time: floor CPU / measured CPU per {unit})")


def print_row(name: str, per_item: Timing, width: int, digits: int = 2) -> None:
    """One measurement of the floor table, per item."""
    print(f"{name:<{width}}{1000 * per_item.cpu:>15.{digits}f}{1000 * per_item.wall:>16.{digits}f}")


def print_ratio(name: str, value: float, width: int, target: str = "") -> None:
    """A CPU-time ratio, in the ratio column of the floor table."""
    print(f"{'  ' + name:<{width + 31}}{value:>8.2f}  {target}".rstrip())


def print_floor_table(floors: dict[str, Timing], ingest: Timing, n: int, width: int, digits: int = 2) -> None:
    """Each floor's row and the inline ingest's, per item, then ``ingest / <floor>`` on CPU time for
    each floor (the part of its name before ``:``): target >= 0.80, none for a floor marked
    ``(info)``."""
    for name, t in floors.items():
        print_row(name, t.per(n), width, digits)
    print_row("ingest, workers=1 (run_ingest)", ingest.per(n), width, digits)
    for name, t in floors.items():
        short = name.split(":")[0]
        info = "(info)" in short
        print_ratio(f"ingest / {short.replace(' (info)', '')}", ratio(t, ingest), width, "" if info else ">= 0.80")


def floors_note(floors: dict[str, Timing], n: int) -> str:
    """``CPU floor 1 = 9.61, floor 2 = 12.17`` (ms per item), for the stage table's title."""
    return "CPU " + ", ".join(f"{name.split(':')[0]} = {1000 * t.cpu / n:.2f}" for name, t in floors.items())


def print_ingest_usage(best_run: dict[str, float], n: int, extra: str = "") -> None:
    print(
        f"  ingest: {best_run['faults'] / n:.0f} minor page faults/frame; plan_ingest {1000 * best_run['plan']:.1f} ms "
        f"CPU (not in the figures above){extra}"
    )


def print_scaling(scale: dict[int, dict[str, float]], frames: int, note: str = "", unit: str = "frame") -> None:
    """The `scaling` table: wall throughput and speed-up (informative), then CPU per item and the
    CPU efficiency (the ratio, on CPU time), with the main process's share of the CPU."""
    print(
        f"\nScaling: {frames} {unit}s; wall columns informative, 'excl.' subtracts pool spawn+shutdown "
        f"measured separately; CPU ms/{unit} of all processes with the spawn CPU subtracted{note}"
    )
    print(
        f"{'workers':<9}{'wall ' + unit + 's/s':>15}{'speed-up':>10}{'excl. spawn':>12}{'speed-up':>10}"
        f"{'spawn s':>9}{'CPU ms/' + unit:>15}{'main process':>14}{'main thread':>13}{'CPU efficiency':>16}"
    )
    for w, v in scale.items():
        print(
            f"{w:<9}{v['fps']:>15.1f}{v['fps'] / scale[1]['fps']:>10.2f}{v['fps_ex']:>12.1f}"
            f"{v['fps_ex'] / scale[1]['fps_ex']:>10.2f}{v['spawn']:>9.2f}{v['cpu']:>15.3f}{v['cpu_self']:>14.3f}"
            f"{v['cpu_main_thread']:>13.3f}{v['cpu_efficiency']:>16.2f}"
            + (f"  (started {v['workers_started']})" if v["workers_started"] not in (0, w) else "")
        )
    if 2 in scale:
        one, two = scale[1], scale[2]
        print(
            f"  2 workers: {two['cpu']:.3f} CPU ms/{unit} ({two['cpu'] - one['cpu']:+.3f} on inline; spawn CPU "
            f"{two['spawn_cpu']:.2f} s subtracted), of it the main process {two['cpu_self']:.3f} (its calling "
            f"thread {two['cpu_main_thread']:.3f}: tar, sidecars, manifest, submit, wait; the pool's helper threads "
            f"{two['cpu_self'] - two['cpu_main_thread']:.3f}: send frames, receive + unpickle results) and the "
            f"workers {two['cpu'] - two['cpu_self']:.3f}"
        )


def print_stages(stages: dict[str, float], best_run: dict[str, float], n: int, floors: str, width: int) -> None:
    """The breakdown (CPU), then its sum against the CPU inside ``process_frame`` during the ingest."""
    print(f"\nPer-stage CPU time of one worker, ms/frame ({floors})")
    for name, sec in stages.items():
        print(f"  {name:<{width}}{1000 * sec:>8.2f}")
    print(f"  {'sum of process_frame stages':<{width}}{1000 * sum(stages[k] for k in STAGES):>8.2f}")
    print(f"  {'in run_ingest: inside process_frame':<{width}}{1000 * best_run['process_frame'] / n:>8.2f}")
    print(
        f"  {'in run_ingest: the rest (tar, manifest...)':<{width}}"
        f"{1000 * (best_run['cpu'] - best_run['process_frame']) / n:>8.2f}"
    )
