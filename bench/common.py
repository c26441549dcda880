"""What the ingest benchmarks (``bench/ingest_*.py``) share: timing, one measured ingest, pool
start-up, scaling, floors interleaved with the ingest, the per-stage breakdown of
``engine.process_frame``, hard links for replicated fixtures, arguments and tables.

The scripts import it by putting their own folder first on ``sys.path`` (they run as
``python bench/<name>.py`` from the repository root; ``bench`` is not a package).
"""

from __future__ import annotations

import argparse
import collections
import os
import resource
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import cv2

from mtl_data.ingest import engine
from mtl_data.ingest.engine import IngestOptions, ShardSize, plan_ingest, run_ingest
from mtl_data.ingest.registry import Converter
from mtl_data.ingest.resize import resize_sample
from mtl_data.schema.validate import validate
from mtl_data.shards.codec import encode_sample
from mtl_data.shards.manifest import sample_row

REPO = Path(__file__).resolve().parents[1]
#: the pieces of ``engine.process_frame``, in its order
STAGES = ("convert", "resize_sample", "validate", "encode_sample", "sample_row")


# ---- arguments --------------------------------------------------------------------------------


def parser(doc: str, frames: int, scale_factor: int) -> argparse.ArgumentParser:
    """The options every ingest benchmark takes; a script adds its own."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=frames, help="frames for floor, ingest and breakdown")
    ap.add_argument("--repeats", type=int, default=3, help="repeats; the best is reported")
    ap.add_argument(
        "--fixtures", type=Path, default=Path(os.environ.get("MTL_FIXTURES", REPO.parent / "shared" / "fixtures"))
    )
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


# ---- timing -----------------------------------------------------------------------------------


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    """Smallest wall time (s) of ``fn()`` over ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def wall_and_cpu(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall seconds and CPU seconds of this process (all its threads) of one ``fn()`` call."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def ingest_once(conv: Converter, out: Path, opts: IngestOptions) -> dict[str, float]:
    """One ingest with ``conv`` (pass a fresh one: its per-process caches are then built in the run).

    Returns seconds of planning and of ``run_ingest``; CPU seconds and minor page faults of this
    process and its workers during ``run_ingest``; CPU seconds of this process alone
    (``cpu_self``) and of its calling thread alone (``cpu_main_thread``; the rest of ``cpu_self``
    is the pool's helper threads); and (inline runs only) the seconds spent inside
    ``process_frame``, timed by wrapping the engine's reference to it for the duration of the run.
    """
    t = time.perf_counter()
    plan = plan_ingest(conv, out, opts)
    t_plan = time.perf_counter() - t
    inside = [0.0]
    original = engine.process_frame

    def timed(*args):
        t0 = time.perf_counter()
        try:
            return original(*args)
        finally:
            inside[0] += time.perf_counter() - t0

    usage = lambda: [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]  # noqa
    u0, engine.process_frame = usage(), timed
    try:
        t, tt = time.perf_counter(), time.thread_time()
        run_ingest(plan)
        t_run, cpu_thread = time.perf_counter() - t, time.thread_time() - tt
    finally:
        engine.process_frame = original
    u1 = usage()
    cpu = sum(b.ru_utime + b.ru_stime - a.ru_utime - a.ru_stime for a, b in zip(u0, u1))
    faults = sum(b.ru_minflt - a.ru_minflt for a, b in zip(u0, u1))
    cpu_self = u1[0].ru_utime + u1[0].ru_stime - u0[0].ru_utime - u0[0].ru_stime
    return {
        "plan": t_plan,
        "run": t_run,
        "cpu": cpu,
        "cpu_self": cpu_self,
        "cpu_main_thread": cpu_thread,
        "faults": faults,
        "process_frame": inside[0],
    }


def pool_startup_usage(conv: Converter, opts: IngestOptions, workers: int, hold: float = 0.5) -> tuple[float, float]:
    """`pool_startup` and the CPU seconds it costs (this process + the reaped workers)."""
    usage = lambda: [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]  # noqa
    u0 = usage()
    wall = pool_startup(conv, opts, workers, hold)
    u1 = usage()
    return wall, sum(b.ru_utime + b.ru_stime - a.ru_utime - a.ru_stime for a, b in zip(u0, u1))


def pool_startup(conv: Converter, opts: IngestOptions, workers: int, hold: float = 0.5) -> float:
    """Seconds to spawn + initialize + shut down a pool like the engine's (one task per worker)."""
    t = time.perf_counter()
    with ProcessPoolExecutor(
        workers, mp_context=get_context("spawn"), initializer=engine._init_worker, initargs=(conv, opts)
    ) as pool:
        for fut in [pool.submit(time.sleep, hold) for _ in range(workers)]:
            fut.result()
    return time.perf_counter() - t - hold


def scaling(
    new_converter: Callable[[], Converter],
    out: Path,
    frames: int,
    args: argparse.Namespace,
    details: dict | None = None,
) -> dict[int, tuple[float, float, float, float]]:
    """workers -> (frames/s, frames/s without pool spawn + shutdown, spawn s, CPU ms/frame).

    Each figure is the best of ``args.repeats`` fresh ingests of ``frames`` frames (a fresh
    converter each); the pool start-up is measured separately (`pool_startup`) and subtracted.
    The CPU column includes the workers' start-up. With ``details``, it is filled with
    ``{workers: {"cpu", "cpu_self", "cpu_main_thread", "spawn_cpu"}}`` in ms/frame (``cpu``: all
    processes, the CPU of a separately measured pool start-up subtracted; ``cpu_self``: the main
    process; ``cpu_main_thread``: its calling thread; ``spawn_cpu``: seconds), each the best of
    the repeats.
    """
    out_scale = {}
    for w in range(1, args.workers_max + 1):
        o = IngestOptions(limit=frames, shard_size=args.shard_size, overwrite=True, workers=w)
        runs = [ingest_once(new_converter(), out / f"out{w}w", o) for _ in range(args.repeats)]
        run = min(runs, key=lambda x: x["run"])
        if details is None:
            spawn = min(pool_startup(new_converter(), o, w) for _ in range(args.repeats)) if w > 1 else 0.0
        else:
            spawn, spawn_cpu = (
                min(pool_startup_usage(new_converter(), o, w) for _ in range(args.repeats)) if w > 1 else (0.0, 0.0)
            )
            details[w] = {
                "cpu": 1000 * (min(x["cpu"] for x in runs) - spawn_cpu) / frames,
                "cpu_self": 1000 * min(x["cpu_self"] for x in runs) / frames,
                "cpu_main_thread": 1000 * min(x["cpu_main_thread"] for x in runs) / frames,
                "spawn_cpu": spawn_cpu,
            }
        out_scale[w] = (frames / run["run"], frames / max(run["run"] - spawn, 1e-9), spawn, 1000 * run["cpu"] / frames)
    return out_scale


def print_scaling_cpu(details: dict, unit: str = "frame") -> None:
    """Where the CPU of the 2-worker run goes (`scaling`'s ``details``), against the inline run."""
    if 2 not in details:
        return
    one, two = details[1], details[2]
    print(
        f"  CPU ms/{unit} with the pool's start-up CPU subtracted ({two['spawn_cpu']:.2f} s): inline "
        f"{one['cpu']:.2f}; 2 workers {two['cpu']:.2f} (+{two['cpu'] - one['cpu']:.2f}), of it the main process "
        f"{two['cpu_self']:.2f} (its calling thread {two['cpu_main_thread']:.2f}: tar, sidecars, manifest, "
        f"submit, wait; the pool's helper threads {two['cpu_self'] - two['cpu_main_thread']:.2f}: send frames, "
        f"receive + unpickle results) and the workers {two['cpu'] - two['cpu_self']:.2f}"
    )


def interleaved(
    repeats: int, floors: dict[str, Callable[[], object]], ingest: Callable[[], dict]
) -> tuple[dict[str, tuple[float, float]], list[dict]]:
    """Floors and ingest run in turn, repeat by repeat, so that a burst of load from other work
    on the machine hits both sides of a ratio rather than one.

    Returns:
        ``{floor name: (best wall s, best CPU s)}`` and the ``ingest()`` results of every repeat.
    """
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in floors}
    runs = []
    for _ in range(repeats):
        for name, fn in floors.items():
            times[name].append(wall_and_cpu(fn))
        runs.append(ingest())
    return {k: (min(w for w, _ in v), min(c for _, c in v)) for k, v in times.items()}, runs


def link(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (a copy where links are not possible)."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


Tick = Callable[..., object]  # tick(name, fn, *args) -> fn(*args), its time added to `name`


def stage_breakdown(
    conv: Converter, opts: IngestOptions, frames, repeats: int, parts: Callable[[Tick, object], None]
) -> dict[str, float]:
    """Seconds per frame of each piece of ``engine.process_frame`` (best of ``repeats``).

    Pass 1 does exactly what ``process_frame`` does, piece by piece (keys `STAGES`). Pass 2 calls
    ``parts(tick, frame)`` for every frame: the benchmark re-does the parts of ``convert`` and
    ``encode_sample`` with the library functions they call, under names of its own (indented
    keys), so that the time can be attributed to a function.
    """
    num_det = len(conv.class_tables().get("det2d", [])) or None  # as process_frame
    best: dict[str, float] = {}
    for _ in range(repeats):
        acc: dict[str, float] = collections.defaultdict(float)

        def tick(name, fn, *args, acc=acc):
            t = time.perf_counter()
            out = fn(*args)
            acc[name] += time.perf_counter() - t
            return out

        for f in frames:
            sample = tick("convert", conv.convert, f)
            sample = tick("resize_sample", resize_sample, sample, opts.max_side)
            tick("validate", validate, sample, num_det)
            tick("encode_sample", encode_sample, sample, opts.image_format, opts.jpeg_quality)
            tick("sample_row", sample_row, sample)
        for f in frames:
            parts(tick, f)
        for k, v in acc.items():
            best[k] = min(best.get(k, v), v / len(frames))
    return best


# ---- tables -----------------------------------------------------------------------------------


def ms(fps: float) -> float:
    return 1000.0 / fps


def print_header(title: str, width: int, extra: str = "", unit: str = "frame") -> None:
    """Title line (with the process settings that matter) and the column heads of the floor table."""
    print(
        f"\n{title}; {os.cpu_count()} CPUs; "
        f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}, "
        f"cv2 threads {cv2.getNumThreads()}{extra}"
    )
    print(f"{'measurement':<{width}}{unit + 's/s':>9}{'ms/' + unit:>10}{'ratio':>8}  target")


def print_row(name: str, fps: float, width: int, digits: int) -> None:
    print(f"{name:<{width}}{fps:>9.{digits}f}{ms(fps):>10.2f}")


def print_ratio(name: str, ratio: float, width: int, target: str = "") -> None:
    print(f"{'  ' + name:<{width + 19}}{ratio:>8.2f}  {target}".rstrip())


def print_ingest_usage(best: dict[str, float], n: int, extra: str = "") -> None:
    print(
        f"  ingest CPU (all threads) {1000 * best['cpu'] / n:.1f} ms/frame, "
        f"{best['faults'] / n:.0f} minor page faults/frame; plan_ingest {1000 * best['plan']:.1f} ms "
        f"(not timed above){extra}"
    )


def print_scaling(
    scale: dict[int, tuple[float, float, float, float]], frames: int, digits: int, note: str = ""
) -> None:
    print(f"\nScaling: {frames} frames; 'excl.' subtracts pool spawn+shutdown measured separately{note}")
    print(
        f"{'workers':<9}{'frames/s':>9}{'speed-up':>10}{'fps excl.':>11}{'speed-up':>10}{'spawn s':>9}"
        f"{'CPU ms/frame':>14}"
    )
    for w, (fps, fps_ex, spawn, cpu) in scale.items():
        print(
            f"{w:<9}{fps:>9.{digits}f}{fps / scale[1][0]:>10.2f}{fps_ex:>11.{digits}f}"
            f"{fps_ex / scale[1][1]:>10.2f}{spawn:>9.2f}{cpu:>14.1f}"
        )


def print_stages(stages: dict[str, float], best: dict[str, float], n: int, floors: str, width: int) -> None:
    """The breakdown, then its sum against the time inside ``process_frame`` during the ingest."""
    print(f"\nPer-stage time of one worker, ms/frame ({floors})")
    for name, sec in stages.items():
        print(f"  {name:<{width}}{1000 * sec:>8.2f}")
    print(f"  {'sum of process_frame stages':<{width}}{1000 * sum(stages[k] for k in STAGES):>8.2f}")
    print(f"  {'in run_ingest: inside process_frame':<{width}}{1000 * best['process_frame'] / n:>8.2f}")
    print(
        f"  {'in run_ingest: the rest (tar, manifest...)':<{width}}"
        f"{1000 * (best['run'] - best['process_frame']) / n:>8.2f}"
    )
