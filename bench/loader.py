"""Training loader throughput against the JPEG-decode floor and the thesis's per-file loading.

What is compared, and why: design.md section 7 sets the loader target as ">= 90% of the
JPEG-decode floor at the same resolution, per worker" and ">= 10x the per-file PNG/npy loading
of the reference thesis code". All figures come from the same run, on the same frames:

1. **Floor**: ``cv2.imdecode`` of the stored JPEG bytes at full size, one core, nothing else.
   A second, informative floor adds the full-size decode of the sample's label PNGs (seg 8-bit,
   depth 16-bit): the codec work of the whole sample, which a loader that delivers labels cannot
   avoid (PNG has no reduced-size decode). Each piece is also timed alone, with the zlib inflate
   of ``depth.png`` by itself: where it exceeds the JPEG floor (it does on A2D2 and KITTI frames)
   no loader that delivers depth can reach 0.90 of the JPEG floor, whatever it does around it.
2. **Loader**: ``build_loader`` at the training resolution, ``workers=0`` (in this process,
   OpenCV and torch on one thread, glibc settings of a worker) and 1 and 2 worker processes;
   samples/s over steady-state batches (the start-up and the shuffle buffer's first fill
   excluded) and, per worker, the ratio to the floor. The loader decodes a JPEG at 1/2, 1/4 or
   1/8 size in the DCT domain when the training size allows it; that is the lever that pays for
   the labels.
3. **Thesis baseline**: the reference code's layout: a full-size PNG image and one ``.npy`` file
   per task and sample (one-hot ``C x H x W`` uint8 segmentation masks, 43 x 1024 x 1024 as the
   thesis's A2D2 masks; depth float32 at the stored size; boxes), each task loading the image
   again (the thesis re-decoded the PNG once per task per sample), then resizing image and label
   to the training size.
   Timed in this process on one thread, against the loader's ``workers=0`` figure.

Training resolution: 256x512 (H x W), letterboxed (the aspect ratio is kept: K stays a uniform
scale, which depth and 3D boxes need; KITTI's 3.3:1 frames would otherwise be squeezed by 1.6x).
``--stretch`` measures the stretched resize too.

Frames: the real KITTI fixture frames (1242x375 / 1224x370 PNG, velodyne: jpg + depth + det2d
+ det3d) and the real A2D2 front-centre frame (1920x1208, label + lidar npz: jpg + seg + depth),
replicated and ingested with the library (``bench/ingest_kitti.py`` and ``ingest_a2d2.py``
build the raw roots). The script prints results and never asserts on speed.

Run: ``make bench`` or ``.venv/bin/python bench/loader.py --frames 48 --repeats 3``.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/common.py and the ingest benches
import common  # noqa: E402
import ingest_a2d2  # noqa: E402
import ingest_kitti  # noqa: E402

from mtl_data.ingest.a2d2 import A2D2Converter, A2D2Options  # noqa: E402
from mtl_data.ingest.engine import IngestOptions, ShardSize, plan_ingest, run_ingest  # noqa: E402
from mtl_data.ingest.kitti import KittiConverter  # noqa: E402
from mtl_data.procs import tune_worker_process  # noqa: E402
from mtl_data.shards.reader import ShardSet  # noqa: E402
from mtl_data.shards.tario import iter_tar_samples  # noqa: E402
from mtl_data.train.data import build_loader  # noqa: E402
from mtl_data.train.data.decode import decode  # noqa: E402
from mtl_data.train.data.targets import TargetConfig, collate, encode_example  # noqa: E402
from mtl_data.train.data.transforms import TransformConfig, placement, reduced_decode_factor, transform_sample  # noqa: E402

DATASETS = ("kitti", "a2d2")
THESIS_SEG_CLASSES, THESIS_SEG_SIZE = 43, (1024, 1024)  # the thesis's one-hot A2D2 masks: 43 MiB each


# ---- data ---------------------------------------------------------------------------------------


def build_shards(fixtures: Path, tmp: Path, n: int) -> Path:
    """Ingest ``n`` replicated KITTI frames and ``n`` A2D2 frames into ``tmp/shards``."""
    kitti = ingest_kitti.build_raw(fixtures, tmp / "raw_kitti", n)
    a2d2 = ingest_a2d2.build_raw(ingest_a2d2.fixture_paths(fixtures), tmp / "raw_a2d2", n, True)
    opts = IngestOptions(workers=2, shard_size=ShardSize(count=16))
    run_ingest(plan_ingest(KittiConverter(kitti), tmp / "shards", opts))
    run_ingest(plan_ingest(A2D2Converter(a2d2, A2D2Options()), tmp / "shards", opts))
    return tmp / "shards"


def raw_samples(shards: Path, source: str) -> list[dict]:
    """Every raw sample of a source (``{"__key__", "__url__", ext: bytes}``), in manifest order."""
    out = []
    for shard in sorted(ShardSet.open(shards).manifest.filter(source=source)["shard"].unique()):
        out += [{"__key__": k, "__url__": shard, **m} for k, m in iter_tar_samples(shards / shard)]
    return out


# ---- floors ---------------------------------------------------------------------------------------


def jpeg_floor(raws: list[dict]) -> None:
    for raw in raws:
        cv2.imdecode(np.frombuffer(raw["jpg"], np.uint8), cv2.IMREAD_COLOR)


def member_costs(raws: list[dict], repeats: int) -> dict[str, float]:
    """ms per sample of each codec piece alone, full size (best of ``repeats``): what bounds the
    loader from below whatever it does around them."""
    pieces = {
        "jpg": ("jpg", cv2.IMREAD_COLOR),
        "seg.png": ("seg.png", cv2.IMREAD_UNCHANGED),
        "depth.png": ("depth.png", cv2.IMREAD_UNCHANGED),
    }
    out = {}
    for name, (ext, flag) in pieces.items():
        if ext in raws[0]:
            out[name] = (
                1000
                * common.best_of(
                    repeats,
                    lambda ext=ext, flag=flag: [cv2.imdecode(np.frombuffer(raw[ext], np.uint8), flag) for raw in raws],
                )
                / len(raws)
            )
    if "depth.png" in raws[0]:  # the inflate alone: the PNG format's own floor, not OpenCV's
        idats = [_idat(raw["depth.png"]) for raw in raws]
        out["depth.png zlib inflate alone"] = (
            1000 * common.best_of(repeats, lambda: [zlib.decompress(d) for d in idats]) / len(raws)
        )
    return out


def _idat(png: bytes) -> bytes:
    """The concatenated IDAT chunk data of a PNG."""
    pos, out = 8, []
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos : pos + 8])
        if kind == b"IDAT":
            out.append(png[pos + 8 : pos + 8 + length])
        pos += 12 + length
    return b"".join(out)


def sample_floor(raws: list[dict]) -> None:
    """JPEG + every label PNG at full size (``IMREAD_UNCHANGED``: depth stays 16-bit)."""
    for raw in raws:
        cv2.imdecode(np.frombuffer(raw["jpg"], np.uint8), cv2.IMREAD_COLOR)
        for ext in ("seg.png", "depth.png"):
            if ext in raw:
                cv2.imdecode(np.frombuffer(raw[ext], np.uint8), cv2.IMREAD_UNCHANGED)


# ---- the loader ---------------------------------------------------------------------------------


def _children_cpu() -> dict[int, float]:
    """CPU seconds (user + system) of each live child process of this one, from /proc."""
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


def loader_rate(shards: Path, source: str, workers: int, args, letterbox: bool, tasks=None) -> dict[str, float]:
    """The training loader on one source, over steady-state batches: samples/s and CPU ms per
    sample of the workers and of this process (CPU time does not depend on other load)."""
    loader = build_loader(
        shards,
        mix={source: 1.0},
        tasks=tasks,
        batch_size=args.batch_size,
        image_size=args.size,
        workers=workers,
        letterbox=letterbox,
        seed=0,
        device=args.device,
        shuffle_buffer=args.shuffle_buffer,
    )
    it = iter(loader)
    for _ in range(args.warmup_batches):
        next(it)
    kids0, self0 = _children_cpu(), time.process_time()
    t = time.perf_counter()
    for _ in range(args.batches):
        batch = next(it)
    if args.device == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - t
    kids1, self1 = _children_cpu(), time.process_time()
    n = args.batches * args.batch_size
    assert batch["image"].shape[0] == args.batch_size
    it.close()  # stop the workers now
    worker_cpu = sum(kids1[p] - kids0.get(p, 0.0) for p in kids1)
    return {"rate": n / wall, "worker_ms": 1000 * worker_cpu / n, "main_ms": 1000 * (self1 - self0) / n}


def stage_breakdown(raws: list[dict], args, letterbox: bool, repeats: int) -> dict[str, float]:
    """ms per sample of each in-worker stage (best of ``repeats``), the loader's own functions."""
    transform = TransformConfig(args.size, letterbox=letterbox)
    tasks = tuple(t for t in ("seg", "depth", "det2d", "det3d") if f"{t}.json" in raws[0] or f"{t}.png" in raws[0])
    targets = TargetConfig(tasks, args.size)
    stored = decode(raws[0]).sample.size
    factor = reduced_decode_factor(stored, placement(stored, args.size, letterbox).content_size)
    flag = {
        1: cv2.IMREAD_COLOR,
        2: cv2.IMREAD_REDUCED_COLOR_2,
        4: cv2.IMREAD_REDUCED_COLOR_4,
        8: cv2.IMREAD_REDUCED_COLOR_8,
    }[factor]
    best: dict[str, float] = {}
    for _ in range(repeats):
        acc = dict.fromkeys(
            (
                f"JPEG alone at 1/{factor}",
                "decode() with a full-size JPEG",
                "decode() (reduced JPEG + labels)",
                "transform_sample",
                "encode_example",
                "collate (per sample)",
            ),
            0.0,
        )
        rng = np.random.default_rng(0)
        examples = []
        for raw in raws:
            t0 = time.perf_counter()
            cv2.imdecode(np.frombuffer(raw["jpg"], np.uint8), flag)
            t1 = time.perf_counter()
            decode(raw, tasks)
            t2 = time.perf_counter()
            d = decode(raw, tasks, target_hw=args.size, letterbox=letterbox)
            t3 = time.perf_counter()
            s = transform_sample(d.sample, transform, rng, image=d.image)
            t4 = time.perf_counter()
            examples.append(encode_example(s, targets))
            t5 = time.perf_counter()
            for k, v in zip(acc, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                acc[k] += v
        t = time.perf_counter()
        for i in range(0, len(examples), args.batch_size):
            collate(examples[i : i + args.batch_size])
        acc["collate (per sample)"] = time.perf_counter() - t
        for k, v in acc.items():
            best[k] = min(best.get(k, np.inf), 1000 * v / len(raws))
    return best


# ---- the thesis baseline ------------------------------------------------------------------------------


def build_thesis_files(raws: list[dict], out: Path) -> list[dict[str, Path]]:
    """Per sample: full-size PNG image and one .npy per task, as the reference code stored them."""
    out.mkdir(parents=True)
    files = []
    for i, raw in enumerate(raws):
        d = decode(raw).sample
        paths = {"image": out / f"{i:06d}.png"}
        cv2.imwrite(str(paths["image"]), cv2.cvtColor(d.image, cv2.COLOR_RGB2BGR))
        if d.seg is not None:
            seg = cv2.resize(d.seg, THESIS_SEG_SIZE, interpolation=cv2.INTER_NEAREST)
            onehot = np.zeros((THESIS_SEG_CLASSES, *seg.shape), np.uint8)  # (C, 1024, 1024)
            for c in np.unique(seg[seg < THESIS_SEG_CLASSES]):
                onehot[c] = seg == c
            paths["seg"] = out / f"{i:06d}_seg.npy"
            np.save(paths["seg"], onehot)
        if d.depth is not None:
            paths["depth"] = out / f"{i:06d}_depth.npy"
            np.save(paths["depth"], d.depth)
        if d.det2d is not None:
            paths["boxes"] = out / f"{i:06d}_boxes.npy"
            np.save(paths["boxes"], np.column_stack([d.det2d.boxes, d.det2d.classes]))
        files.append(paths)
    return files


def thesis_load(files: list[dict[str, Path]], size: tuple[int, int]) -> None:
    """Per task: read + decode the PNG again, np.load the label, resize both."""
    h, w = size
    for paths in files:
        for task in ("seg", "depth", "boxes"):
            if task not in paths:
                continue
            image = cv2.imread(str(paths["image"]), cv2.IMREAD_COLOR)
            image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
            label = np.load(paths[task])
            if task == "seg":
                label = np.stack([cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST) for m in label])
            elif task == "depth":
                label = cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST)


# ---- main ---------------------------------------------------------------------------------------------


def parse_size(text: str) -> tuple[int, int]:
    h, _, w = text.partition("x")
    return int(h), int(w)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=48, help="frames per dataset")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of floors and baseline; the best is reported")
    ap.add_argument("--size", type=parse_size, default=(256, 512), help="training size HxW")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--batches", type=int, default=12, help="timed batches per loader run")
    ap.add_argument("--warmup-batches", type=int, default=3)
    ap.add_argument("--shuffle-buffer", type=int, default=16)
    ap.add_argument("--workers-max", type=int, default=2)
    ap.add_argument("--stretch", action="store_true", help="also measure the stretched (non-letterbox) resize")
    ap.add_argument("--device", default=None, help="e.g. cuda: batches moved there non_blocking")
    ap.add_argument(
        "--fixtures",
        type=Path,
        default=Path(os.environ.get("MTL_FIXTURES", common.REPO.parent / "shared" / "fixtures")),
    )
    args = ap.parse_args()
    r = args.repeats

    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="mtl-bench-loader-") as tmp:
        tmp = Path(tmp)
        shards = build_shards(args.fixtures, tmp, args.frames)
        # One core for everything timed in this process, as in a worker (floors, workers=0,
        # baseline); the worker processes set the same themselves.
        tune_worker_process()
        torch.set_num_threads(1)
        results = {}
        for source in DATASETS:
            raws = raw_samples(shards, source)
            n = len(raws)
            res = {"n": n, "hw": decode(raws[0]).sample.size, "loader": {}}
            res["floor"] = n / common.best_of(r, lambda raws=raws: jpeg_floor(raws))
            res["floor2"] = n / common.best_of(r, lambda raws=raws: sample_floor(raws))
            res["members"] = member_costs(raws, r)
            modes = [("letterbox", True)] + ([("stretch", False)] if args.stretch else [])
            for mode, letterbox in modes:
                for w in range(args.workers_max + 1):
                    runs = [loader_rate(shards, source, w, args, letterbox) for _ in range(r)]
                    res["loader"][(mode, w)] = {k: (max if k == "rate" else min)(x[k] for x in runs) for k in runs[0]}
            if source == "kitti":  # image + boxes only: no label PNG to decode
                runs = [loader_rate(shards, source, 0, args, True, tasks=("det2d", "det3d")) for _ in range(r)]
                res["loader"][("letterbox, det2d+det3d only", 0)] = {
                    k: (max if k == "rate" else min)(x[k] for x in runs) for k in runs[0]
                }
            res["stages"] = stage_breakdown(raws, args, True, r)
            files = build_thesis_files(raws, tmp / f"thesis_{source}")
            res["thesis"] = n / common.best_of(r, lambda files=files: thesis_load(files, args.size))
            res["thesis_tasks"] = sorted({t for f in files for t in f if t != "image"})
            results[source] = res

    h, w = args.size
    width = 58
    print(
        f"\nLoader vs JPEG-decode floor at {h}x{w} (letterboxed), batch {args.batch_size}, "
        f"{args.batches} timed batches after {args.warmup_batches}; {os.cpu_count()} CPUs; "
        f"load average (1 min) {load0:.2f} at start, {os.getloadavg()[0]:.2f} at end"
    )
    for source, res in results.items():
        fh, fw = res["hw"]
        print(f"\n{source}: {res['n']} frames {fw}x{fh}")
        print(f"{'measurement':<{width}}{'sample/s':>9}{'ms/sample':>10}{'ratio':>8}  target")
        common.print_row("floor: cv2.imdecode full-size JPEG, 1 core", res["floor"], width, 1)
        common.print_row("floor 2 (info): + label PNGs at full size", res["floor2"], width, 1)
        print("  full-size decode alone, ms/sample: " + ", ".join(f"{k} {v:.2f}" for k, v in res["members"].items()))
        for (mode, workers), got in res["loader"].items():
            name = f"loader {mode}, " + ("workers=0 (in process)" if workers == 0 else f"workers={workers}")
            common.print_row(name, got["rate"], width, 1)
            per = got["rate"] / max(workers, 1)
            common.print_ratio("per worker / floor", per / res["floor"], width, ">= 0.90")
            common.print_ratio("per worker / floor 2", per / res["floor2"], width)
            cpu = got["main_ms"] + got["worker_ms"]
            print(
                f"    CPU ms/sample: workers {got['worker_ms']:.2f}, main process {got['main_ms']:.2f}; "
                f"floor / CPU of the whole loader {common.ms(res['floor']) / cpu:.2f}"
            )
        tasks = "+".join(res["thesis_tasks"])
        common.print_row(f"thesis per-file: PNG + npy per task ({tasks}), 1 core", res["thesis"], width, 1)
        common.print_ratio(
            "loader workers=0 / thesis", res["loader"][("letterbox", 0)]["rate"] / res["thesis"], width, ">= 10"
        )
        print(
            "  in-worker stages, ms/sample (one core): " + ", ".join(f"{k} {v:.2f}" for k, v in res["stages"].items())
        )
    print(f"\ncommand: {common.command_line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
