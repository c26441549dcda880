"""Ray vs the local process pool, and a simulated cluster run of full A2D2.

What is compared, and why: ``ingest --engine ray`` converts frames as Ray tasks instead of in the
engine's local ``spawn`` pool; the driver alone writes, so the output is the same and only the
cost differs. This benchmark measures that cost on this machine, on the same frames, in the same
run: KITTI frames (the two real fixture frames replicated, ``bench/ingest_kitti.build_raw``) in
small shards (``--shard-size``, default 4 samples, so that per-shard figures are meaningful),
for workers = 1 .. ``--workers-max``, with

* the local engine: ``workers=1`` runs inline in the driver (printed for information), so a local
  pool of one worker is also measured (the engine's own ``_local_pool``, registered here under
  ``EXECUTORS["local-pool"]``: the pool run_ingest builds for ``workers >= 2``); its start-up
  (spawn + initializer + shutdown, measured separately by ``common.pool_startup``) is subtracted,
  as Ray's is;
* the Ray engine on a local Ray instance of ``w`` CPUs, started once per ``w`` before the runs
  (the run finds Ray running, as under ``--address``): its start-up (``ray.init``) is measured and
  printed, not charged to the runs, and one untimed warm-up run starts its worker processes.

The floor of every ratio is the local pool of the same worker count, measured in the same run;
the ratios are on CPU time (``local / ray`` CPU per frame; the 1 -> 2 worker CPU ratio), wall
times are informative. CPU of ALL processes: for the local engine the driver plus its reaped
workers (``RUSAGE_CHILDREN``); for Ray the driver plus every live descendant process (gcs_server,
raylet, its agents and workers are descendants of the driver for a local instance), read from
``/proc/<pid>/stat`` before and after. Ray's daemons burn CPU while idle: right after each Ray
run an idle interval of the same wall length is measured the same way; "gross" figures include
it, "net" figures subtract it, and the ratios and the per-shard overhead are given for both.
The Ray output is checked byte for byte against the local output (every tar, the manifest,
classes.json, rejects.jsonl).

Then a simulation of a cluster run of full A2D2 (41,277 labelled semantic frames, 1920x1208;
the A2D2 paper, counted in ../shared/docs/raw-formats.md): per-frame CPU of a Ray worker,
the driver's CPU per frame (the driver alone writes tars, sidecars and manifest: a serial part)
and the bytes per frame a task returns to the driver are measured on frames built from the real
A2D2 fixture (``bench/ingest_a2d2.build_raw``), and the time of a run on N worker CPUs is
``max(shards x time per shard / N, driver serial time, bytes / network bandwidth) + Ray
start-up``, with time per shard = frames per shard x worker CPU per frame + Ray's overhead per
shard (measured on KITTI, per task, times the tasks of a shard). The network bandwidth into the
driver is an assumption (``--bandwidth``, 10 GbE). The script prints results and never asserts on
speed.

Run: ``make bench`` or ``.venv/bin/python bench/ingest_ray.py --frames 48 --repeats 3``.
"""

from __future__ import annotations

import argparse
import dataclasses
import filecmp
import logging
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/common.py and the ingest benchmarks
import common  # noqa: E402
import ingest_a2d2  # noqa: E402
import ingest_kitti  # noqa: E402

from mtl_data.ingest import engine  # noqa: E402
from mtl_data.ingest.a2d2 import A2D2Converter, A2D2Options  # noqa: E402
from mtl_data.ingest.engine import IngestOptions, ShardSize, plan_ingest, run_ingest  # noqa: E402
from mtl_data.ingest.kitti import KittiConverter  # noqa: E402
from mtl_data.procs import tune_worker_process  # noqa: E402

#: full A2D2, labelled semantic part: 41,277 frames in 23 scenes (the A2D2 paper; the layout in
#: ../shared/docs/raw-formats.md), every front-centre camera frame 1920x1208
A2D2_FRAMES = 41_277
#: the engine's default shard size (IngestOptions.shard_size)
DEFAULT_SHARD_BYTES = IngestOptions().shard_size.bytes
LOCAL_POOL = "local-pool"  # the engine's local pool, also for one worker (registered in main)


# ---- CPU of this process and of every descendant ----------------------------------------------


def _descendants() -> dict[tuple[int, int], tuple[float, str]]:
    """(pid, start time) -> (CPU seconds, user + system, and its kind) of every live descendant
    of this process, from ``/proc``: ``worker`` for a Ray worker (``ray::IDLE``, ``ray::_work_in``),
    ``daemon`` for the rest (gcs_server, raylet, Ray's agents and monitors)."""
    tick = os.sysconf("SC_CLK_TCK")
    stats = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        # fields[1] = ppid; utime, stime = fields 11, 12; starttime = field 19
        stats[int(stat.parent.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick, int(fields[19]))
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = {}, list(children.get(os.getpid(), []))
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            name = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            name = ""
        kind = "worker" if name.startswith("ray::") and "Agent" not in name else "daemon"
        out[(pid, stats[pid][2])] = (stats[pid][1], kind)
    return out


def _kids_cpu() -> float:
    u = resource.getrusage(resource.RUSAGE_CHILDREN)
    return u.ru_utime + u.ru_stime


@dataclasses.dataclass
class Cpu:
    """Seconds of one measured window: wall; CPU of the driver (all threads), of its main
    thread, of reaped children, and of live descendants by kind (new ones count from zero)."""

    wall: float = 0.0
    driver: float = 0.0
    main_thread: float = 0.0
    reaped: float = 0.0
    workers: float = 0.0
    daemons: float = 0.0
    new_workers: int = 0
    finalize: float = 0.0

    @property
    def total(self) -> float:
        return self.driver + self.reaped + self.workers + self.daemons


#: CPU seconds of the driver's calling thread inside ``engine._finalize`` (manifest, classes,
#: ingest.json: once per run), summed by the wrapper `timed_finalize` installs
FINALIZE = [0.0]


def timed_finalize() -> None:
    """Wrap ``engine._finalize`` (as ``common.ingest_once`` wraps ``process_frame``) so that its
    CPU, a cost once per run rather than per frame, can be told apart in the driver's figure."""
    original = engine._finalize

    def timed(*args):
        t = time.thread_time()
        try:
            return original(*args)
        finally:
            FINALIZE[0] += time.thread_time() - t

    engine._finalize = timed


def measure_all(fn, descendants: bool = True) -> Cpu:
    """`Cpu` of one ``fn()`` call; ``descendants``: also the live descendants (Ray's processes)."""
    d0 = _descendants() if descendants else {}
    fin = FINALIZE[0]
    wall, cpu, thread, kids = time.perf_counter(), time.process_time(), time.thread_time(), _kids_cpu()
    fn()
    t = Cpu(time.perf_counter() - wall, time.process_time() - cpu, time.thread_time() - thread, _kids_cpu() - kids)
    t.finalize = FINALIZE[0] - fin
    if descendants:
        for key, (sec, kind) in _descendants().items():
            delta = sec - d0.get(key, (0.0, kind))[0]
            if kind == "worker":
                t.workers += delta
                t.new_workers += key not in d0
            else:
                t.daemons += delta
    return t


def best(cpus: list[Cpu]) -> Cpu:
    """The repeat with the least total CPU (its parts stay consistent), with the least wall."""
    b = dataclasses.replace(min(cpus, key=lambda c: c.total))
    b.wall = min(c.wall for c in cpus)
    return b


def minus(a: Cpu, b: Cpu) -> Cpu:
    """``a - b`` field by field (a start-up or an idle interval taken off a run)."""
    return Cpu(*(getattr(a, f.name) - getattr(b, f.name) for f in dataclasses.fields(Cpu)))


# ---- runs ---------------------------------------------------------------------------------------


def planned(new_converter, out: Path, opts: IngestOptions):
    """``run_ingest`` of a plan made now with a fresh converter, as a function to time: the plan
    (layout check, frame listing; the same for every engine) stays outside the timed window."""
    plan = plan_ingest(new_converter(), out, opts)
    return lambda: run_ingest(plan)


def local_runs(new_converter, out: Path, opts: IngestOptions, repeats: int) -> tuple[Cpu, Cpu | None]:
    """Best of ``repeats`` local ingests (no Ray running) and, for a pool, the best of its
    separately measured start-up (None inline)."""
    runs = [measure_all(planned(new_converter, out, opts), descendants=False) for _ in range(repeats)]
    spawn = None
    if opts.engine == LOCAL_POOL or opts.workers > 1:
        conv, hold = new_converter(), 0.5
        starts = [
            measure_all(lambda: common._pool_once(conv, opts, opts.workers, hold), descendants=False)
            for _ in range(repeats)
        ]
        for t in starts:  # as common.pool_startup: each worker's task is a sleep of `hold`
            t.wall -= hold
        spawn = best(starts)
    return best(runs), spawn


def ray_runs(new_converter, out: Path, opts: IngestOptions, repeats: int) -> tuple[Cpu, Cpu]:
    """Best of ``repeats`` Ray ingests, each followed by an idle interval of its wall length:
    (best run, best idle interval)."""
    runs, idles = [], []
    for _ in range(repeats):
        runs.append(measure_all(planned(new_converter, out, opts)))
        idles.append(measure_all(lambda wall=runs[-1].wall: time.sleep(wall)))
    return best(runs), best(idles)


def start_ray(cpus: int, temp_dir: str):
    """A local Ray instance of ``cpus`` CPUs in this process: (the ray module, its start-up Cpu)."""
    import ray

    # ray.init leaves its processes running: they are measured as new descendants (from zero)
    t = measure_all(
        lambda: ray.init(
            num_cpus=cpus,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
            _temp_dir=temp_dir,
        )
    )
    return ray, t


def _converter_cached(frames) -> bool:
    """A task for the engine's Ray pool: whether this worker's converter (``engine._WORKER``)
    already holds the undistortion maps (a previous task built them here), then build them."""
    conv = engine._WORKER[0]
    had = ("maps", "front_center") in conv._cache
    conv._maps("front_center")
    return had


def cache_survives_tasks(conv, opts: IngestOptions) -> bool:
    """Whether the A2D2 converter's caches survive from one Ray task to the next in one worker
    when the converter travels as the engine sends it (``RayPool``, Ray already running)."""
    pool = engine.RayPool(conv, opts)
    try:
        pool.submit(_converter_cached, []).result()
        return pool.submit(_converter_cached, []).result()
    finally:
        pool.shutdown()


def same_output(a: Path, b: Path) -> tuple[bool, int]:
    """Whether the source folders ``a`` and ``b`` hold the same bytes in every output file but
    ``ingest.json`` (which records time, engine and workers); and how many files were compared."""
    names = sorted(p.name for p in a.iterdir() if p.is_file() and p.name != "ingest.json")
    other = sorted(p.name for p in b.iterdir() if p.is_file() and p.name != "ingest.json")
    return names == other and all(filecmp.cmp(a / n, b / n, shallow=False) for n in names), len(names)


def tars(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.tar"))


# ---- main -------------------------------------------------------------------------------------


def main() -> int:
    ap = common.parser(__doc__, frames=48, scale_factor=1)
    ap.set_defaults(shard_size=ShardSize(count=4))
    for action in ap._actions:  # the scaling here is over --frames
        if action.dest == "scale_frames":
            action.help = "unused here: 1 -> --workers-max workers run on --frames"
    ap.add_argument("--a2d2-frames", type=int, default=6, help="A2D2 frames for the per-frame figures")
    ap.add_argument(
        "--with-lidar",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="give every A2D2 frame the real front-center lidar npz (depth task)",
    )
    ap.add_argument(
        "--cluster-cpus", default="8,32,128,512", help="worker CPUs of the simulated clusters (comma-separated)"
    )
    ap.add_argument(
        "--bandwidth", type=float, default=1.25e9, help="assumed network bandwidth into the driver, bytes/s (10 GbE)"
    )
    args = ap.parse_args()
    n, r, a2n = args.frames, args.repeats, args.a2d2_frames
    cluster = [int(x) for x in args.cluster_cpus.split(",")]

    tune_worker_process()  # the settings `mtl-data ingest` runs the driver (and inline frames) with
    engine.EXECUTORS[LOCAL_POOL] = engine._local_pool  # the engine's pool, for one worker too
    timed_finalize()
    load0 = os.getloadavg()[0]
    ws = list(range(1, args.workers_max + 1))
    fx = ingest_a2d2.fixture_paths(args.fixtures)
    tmp = Path(tempfile.mkdtemp(prefix="mtl-bench-ray-"))
    ray_tmp = tempfile.mkdtemp(prefix="mtlray", dir="/tmp")  # Ray's sockets need a short path
    try:
        kroot = ingest_kitti.build_raw(args.fixtures, tmp / "kitti", n)
        aroot = ingest_a2d2.build_raw(fx, tmp / "a2d2", a2n, args.with_lidar)

        def kitti():
            return KittiConverter(kroot)

        def a2d2():
            return A2D2Converter(aroot, A2D2Options())

        kopts = IngestOptions(limit=n, shard_size=args.shard_size, overwrite=True)
        aopts = IngestOptions(limit=a2n, overwrite=True)  # the default shard size (256 MB)
        common.warm_up(kitti(), tmp / "warm", kopts)
        common.warm_up(a2d2(), tmp / "warm", aopts)

        # ---- local engine first, with no Ray in this process (its threads would count here)
        local: dict[str, tuple[Cpu, Cpu | None]] = {}
        local["inline"] = local_runs(kitti, tmp / "inline", kopts, r)
        for w in ws:
            o = dataclasses.replace(kopts, workers=w, engine=LOCAL_POOL)
            local[f"pool{w}"] = local_runs(kitti, tmp / f"local{w}", o, r)
        a_local = local_runs(a2d2, tmp / "a2d2-local", aopts, r)[0]  # inline: caches built once per run
        t_maps, t_lut = ingest_a2d2.cache_build(aroot, r)

        # ---- Ray: one local instance per worker count, started before its runs
        ray_res: dict[int, tuple[Cpu, Cpu]] = {}
        startup: dict[int, Cpu] = {}
        identical: dict[int, bool] = {}
        files_compared = 0
        a_ray = a_idle = None
        for w in ws:
            ray, startup[w] = start_ray(w, ray_tmp)
            try:
                o = dataclasses.replace(kopts, workers=w, engine="ray")
                planned(kitti, tmp / "ray-warm", dataclasses.replace(o, limit=min(n, 4 * w)))()
                ray_res[w] = ray_runs(kitti, tmp / f"ray{w}", o, r)
                identical[w], files_compared = same_output(tmp / f"ray{w}" / "kitti", tmp / f"local{w}" / "kitti")
                if w == 1:  # A2D2 per-frame figures on one Ray worker
                    oa = dataclasses.replace(aopts, engine="ray", workers=1)
                    planned(a2d2, tmp / "a2d2-ray-warm", dataclasses.replace(oa, limit=1))()
                    a_ray, a_idle = ray_runs(a2d2, tmp / "a2d2-ray", oa, r)
                    cache_kept = cache_survives_tasks(a2d2(), oa)
                    identical["a2d2"] = same_output(tmp / "a2d2-ray" / "a2d2", tmp / "a2d2-local" / "a2d2")[0]
            finally:
                ray.shutdown()
        shards = len(tars(tmp / "local1" / "kitti"))
        a_bytes = sum(p.stat().st_size for p in tars(tmp / "a2d2-ray" / "a2d2"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(ray_tmp, ignore_errors=True)

    # ---- KITTI: Ray vs local ------------------------------------------------------------------
    print(
        f"\nRay vs the local process pool: KITTI, {n} frames in {shards} shards of {args.shard_size.count} "
        f"(one frame per task), best of {r}; {os.cpu_count()} CPUs; load average (1 min) {load0:.2f} at start, "
        f"{os.getloadavg()[0]:.2f} at end"
    )
    for w in ws:
        s = startup[w]
        print(
            f"  Ray start-up, {w} CPU{'s' if w > 1 else ''} (ray.init, not in the runs): {s.wall:.2f} s wall, "
            f"{s.total:.2f} s CPU (driver {s.driver:.2f}, started processes {s.workers + s.daemons:.2f})"
        )
    print(
        "  CPU ms/frame of all processes (ratios use it); wall informative; local pools: start-up measured\n"
        "  separately and subtracted; ray gross = the run, ray net = the run minus an idle interval of\n"
        "  the same length (Ray's daemons and the driver's Ray threads with no task)"
    )
    hdr = (
        f"{'engine':<22}{'workers':>8}{'wall ms/frame':>15}{'CPU ms/frame':>14}{'driver':>9}{'main thr':>10}"
        f"{'workers':>9}{'daemons':>9}{'start-up s':>12}"
    )
    print(hdr)

    def row(name: str, w: int, c: Cpu, extra: str = "") -> None:
        print(
            f"{name:<22}{w:>8}{1000 * c.wall / n:>15.2f}{1000 * c.total / n:>14.2f}{1000 * c.driver / n:>9.2f}"
            f"{1000 * c.main_thread / n:>10.2f}{1000 * (c.workers + c.reaped) / n:>9.2f}"
            f"{1000 * c.daemons / n:>9.2f}{extra}"
        )

    pool: dict[int, Cpu] = {}
    gross: dict[int, Cpu] = {}
    net: dict[int, Cpu] = {}
    row("local inline (info)", 1, local["inline"][0])
    for w in ws:
        run, spawn = local[f"pool{w}"]
        pool[w] = minus(run, spawn)
        row("local pool", w, pool[w], f"{spawn.wall:>8.2f} w {spawn.total:.2f} c")
        gross[w], idle = ray_res[w]
        net[w] = minus(gross[w], idle)
        net[w].wall = gross[w].wall
        row("ray gross", w, gross[w], f"{startup[w].wall:>8.2f} w {startup[w].total:.2f} c")
        row("ray net of idle", w, net[w])
        print(f"{'  (idle interval)':<22}{w:>8}{'':>15}{1000 * idle.total / n:>14.2f}")
        if gross[w].new_workers:
            print(f"  ({gross[w].new_workers} Ray worker process(es) started during the best run: counted from 0)")

    print(
        f"\nPer-shard overhead of Ray over the local pool of the same workers "
        f"({shards} shards, {n // shards} tasks each)"
    )
    print(
        f"{'workers':<9}{'CPU ms/shard gross':>20}{'CPU ms/shard net':>18}{'wall ms/shard':>15}{'CPU ms/task net':>17}"
    )
    per_task_net: dict[int, float] = {}
    for w in ws:
        dg, dn = gross[w].total - pool[w].total, net[w].total - pool[w].total
        per_task_net[w] = dn / n
        print(
            f"{w:<9}{1000 * dg / shards:>20.1f}{1000 * dn / shards:>18.1f}"
            f"{1000 * (gross[w].wall - pool[w].wall) / shards:>15.1f}{1000 * dn / n:>17.2f}"
        )

    print("\nRatios on CPU time (floor = the local pool of the same worker count, this run)")
    for w in ws:
        print(f"  local / ray CPU per frame, workers={w} {pool[w].total / gross[w].total:>10.2f}")
        print(f"  local / ray CPU per frame net of idle, workers={w} {pool[w].total / net[w].total:>10.2f}")
    if 2 in ws:
        print("Scaling 1 -> 2 workers (wall speed-up informative; CPU ratio = CPU per frame at 1 / at 2)")
        for name, d in (("local pool", pool), ("ray gross", gross), ("ray net", net)):
            print(
                f"  {name:<11}1 -> 2 workers: wall speed-up (info) {d[1].wall / d[2].wall:.2f}x, "
                f"CPU ratio {d[1].total / d[2].total:.2f}"
            )
    ok = all(identical[w] for w in ws)
    print(
        f"ray output identical to local: {'yes' if ok else 'no'} (KITTI, workers {', '.join(map(str, ws))}: "
        f"{files_compared} files each, every tar, manifest.parquet, classes.json, rejects.jsonl; "
        f"A2D2: {'yes' if identical['a2d2'] else 'no'})"
    )

    # ---- A2D2: measured per frame, and the simulated cluster run --------------------------------
    a_net = minus(a_ray, a_idle)
    bpf = a_bytes / a2n
    lidar = "with lidar npz" if args.with_lidar else "no lidar"
    print(f"\nA2D2 per frame ({a2n} frames 1920x1208 built from the real fixture, {lidar}; best of {r}; CPU)")
    print(f"  A2D2 Ray worker CPU per frame {1000 * a_ray.workers / a2n:>10.1f} ms (1 worker, Ray's worker process)")
    print(
        f"  A2D2 local inline CPU per frame {1000 * a_local.total / a2n:>10.1f} ms (driver: conversion and writing; "
        f"the converter's caches built once per run)"
    )
    print(
        f"  a Ray task gets the converter from the object store: its per-process caches (undistortion maps "
        f"{1000 * t_maps:.1f} ms, colour LUT {1000 * t_lut:.1f} ms CPU) survive from one task to the next: "
        f"{'yes' if cache_kept else 'no, rebuilt every task'}"
    )
    drv = (a_net.driver - a_ray.finalize) / a2n  # the driver's work per frame, _finalize excluded
    print(
        f"  driver CPU per frame, Ray run {1000 * drv:>10.1f} ms net of idle, all its threads, _finalize excluded "
        f"(main thread {1000 * (a_ray.main_thread - a_ray.finalize) / a2n:.1f} ms: tar, sidecars, ray.get; "
        f"_finalize {1000 * a_ray.finalize:.1f} ms once per run)"
    )
    print(
        f"  Ray daemons per frame, net of idle {1000 * a_net.daemons / a2n:>10.1f} ms; "
        f"bytes returned per frame {bpf / 1e6:.3f} MB"
    )

    fps = max(1, int(DEFAULT_SHARD_BYTES // bpf))
    n_shards = A2D2_FRAMES * bpf / DEFAULT_SHARD_BYTES
    w_frame = a_ray.workers / a2n
    over_task = max(0.0, max(per_task_net.values()))
    t_shard = fps * w_frame + fps * over_task
    driver_s = A2D2_FRAMES * drv
    net_s = A2D2_FRAMES * bpf / args.bandwidth
    up = startup[1].wall
    print(
        f"\nSimulated cluster run, full A2D2: {A2D2_FRAMES:,} labelled semantic frames (23 scenes; the A2D2 "
        f"paper, ../shared/docs/raw-formats.md), 1920x1208, default shards of {DEFAULT_SHARD_BYTES / 1e6:.0f} MB"
    )
    print(
        f"  measured here: {bpf / 1e6:.3f} MB/frame -> {n_shards:.0f} shards of {fps} frames; time per shard = "
        f"{fps} x {1000 * w_frame:.1f} ms (Ray worker CPU/frame) + {fps} tasks x {1000 * over_task:.2f} ms "
        f"(Ray overhead per task, KITTI, net, the larger over worker counts) = {t_shard:.1f} s"
    )
    print(
        f"  driver (serial): {1000 * drv:.1f} ms CPU/frame -> {driver_s:.0f} s; network into the "
        f"driver (assumed {args.bandwidth / 1e9:.2f} GB/s, 10 GbE): {net_s:.0f} s; Ray start-up as measured "
        f"locally: {up:.1f} s (assumed for the cluster too)"
    )
    print(
        f"{'worker CPUs':<13}{'workers s':>11}{'driver s':>10}{'network s':>11}{'start-up s':>12}{'total s':>10}  binds"
    )
    for cpus in cluster:
        bounds = {"workers": n_shards * t_shard / cpus, "driver": driver_s, "network": net_s}
        binds = max(bounds, key=bounds.get)
        print(
            f"{cpus:<13}{bounds['workers']:>11.0f}{driver_s:>10.0f}{net_s:>11.0f}{up:>12.1f}"
            f"{bounds[binds] + up:>10.0f}  {binds}"
        )
    knee = n_shards * t_shard / max(driver_s, net_s)
    print(f"  the workers stop binding above {knee:.0f} worker CPUs (shards x time per shard / max(driver, network))")
    print(f"\ncommand: {common.command_line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
