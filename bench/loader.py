"""Training loader throughput against the JPEG-decode floor, a plain torch ``Dataset`` and the
thesis's per-file loading, all on CPU time.

What is compared, and why: design.md section 7 sets the loader targets "per worker >= 80% of the
JPEG decode of the same stored bytes at the reduced scale the loader uses (all labels
delivered), CPU time; >= 2x a plain torch ``Dataset`` over the same files; >= 5x the reference
thesis loader". All figures come from the same run, on the same frames, and every ratio is on
CPU time (``bench/common.py``: the machines are shared, wall time swings 2x within a run; wall
samples/s are printed for information):

1. **Floor**: ``cv2.imdecode`` of each sample's stored JPEG bytes at the reduced scale the
   loader decodes it at (``cv2.IMREAD_REDUCED_COLOR_2`` / ``_4`` / ``_8``, the factor
   ``reduced_decode_factor`` gives for that sample's stored size and the training size, as
   ``decode`` computes it), one core, nothing else. A second, informative floor adds the
   full-size decode of the sample's label PNGs (seg 8-bit, depth 16-bit): the codec work of the
   whole sample, which a loader that delivers labels cannot avoid (PNG has no reduced-size
   decode). Each piece is also timed alone at full size, with the zlib inflate of ``depth.png``
   by itself.
2. **Loader**: ``build_loader`` at the training resolution, ``workers=0`` (in this process,
   OpenCV and torch on one thread, glibc settings of a worker) and 1 and 2 worker processes;
   over steady-state batches (the start-up and the shuffle buffer's first fill excluded), the
   CPU per delivered sample of the worker processes (from ``/proc``, they outlive the window)
   and of this process together; ``floor / loader`` on those CPU figures is the ratio against
   the target (per worker: the CPU a worker spends on a sample, plus this process's share).
   Without a device this process widens every batch on the CPU (normalized float32 image,
   int64 class maps, float32 depth); with ``device="cuda"`` that runs on the GPU and this
   process only pins and copies, so ``floor / worker CPU alone`` is printed too: the ratio a
   worker achieves when the GPU widens. ``1 -> 2 workers`` is the wall throughput ratio; on a
   2-core machine the main process shares the cores with the workers, which caps it below 2.
3. **Plain ``Dataset``**: what one would write first over the same shard files: a map-style
   ``torch.utils.data.Dataset`` over an index of the tar members (built before timing), per item
   the members read with a seek, the JPEG and the label PNGs decoded at full size with OpenCV,
   resized to the training size (bilinear image, nearest labels, stretched), the image
   normalised, the box JSON parsed and padded, tensors out; ``DataLoader(num_workers=0)`` with
   its default collate, in this process on one thread. It does not augment (the loader flips
   and jitters). Target: plain CPU / loader CPU (``workers=0``) >= 2.
4. **Thesis baseline**: the reference code's layout: a full-size PNG image and one ``.npy`` file
   per task and sample (one-hot ``C x H x W`` uint8 segmentation masks, 43 x 1024 x 1024 as the
   thesis's A2D2 masks; depth float32 at the stored size; boxes), each task loading the image
   again (the thesis re-decoded the PNG once per task per sample), then resizing image and label
   to the training size. Timed in this process on one thread; target: thesis CPU / loader CPU
   (``workers=0``) >= 5.

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
import contextlib
import io
import json
import os
import struct
import sys
import tarfile
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

from mtl_data.cli.main import main as mtl_data  # noqa: E402
from mtl_data.ingest.a2d2 import A2D2Converter, A2D2Options  # noqa: E402
from mtl_data.ingest.engine import IngestOptions, ShardSize, plan_ingest, run_ingest  # noqa: E402
from mtl_data.ingest.kitti import KittiConverter  # noqa: E402
from mtl_data.procs import tune_worker_process  # noqa: E402
from mtl_data.shards.codec import LABEL_PNG_PARAMS, decode_sample  # noqa: E402
from mtl_data.shards.depthpoints import decode_depth_points  # noqa: E402
from mtl_data.shards.png import decode_png  # noqa: E402
from mtl_data.shards.reader import ShardSet  # noqa: E402
from mtl_data.shards.tario import iter_tar_samples, split_member_name  # noqa: E402
from mtl_data.train.data import build_loader  # noqa: E402
from mtl_data.train.data.decode import decode  # noqa: E402
from mtl_data.train.data.targets import TargetConfig, collate, encode_example  # noqa: E402
from mtl_data.train.data.transforms import TransformConfig, placement, reduced_decode_factor, transform_sample  # noqa: E402

DATASETS = ("kitti", "a2d2")
THESIS_SEG_CLASSES, THESIS_SEG_SIZE = 43, (1024, 1024)  # the thesis's one-hot A2D2 masks: 43 MiB each
#: cv2.imdecode flags of the loader's reduced JPEG decode, by factor (train/data/decode.py)
REDUCED_FLAGS = {
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}
IMAGENET_MEAN, IMAGENET_STD = np.float32([0.485, 0.456, 0.406]), np.float32([0.229, 0.224, 0.225])
PLAIN_MAX_BOXES = 64


# ---- data ---------------------------------------------------------------------------------------


def build_shards(fixtures: Path, tmp: Path, n: int) -> Path:
    """Ingest ``n`` replicated KITTI frames and ``n`` A2D2 frames into ``tmp/shards``."""
    kitti = ingest_kitti.build_raw(fixtures, tmp / "raw_kitti", n)
    a2d2 = ingest_a2d2.build_raw(ingest_a2d2.fixture_paths(fixtures), tmp / "raw_a2d2", n, True)
    # two workers halve the set-up time; a pool's start-up only pays for itself beyond a few frames
    opts = IngestOptions(workers=2 if n > 8 else 1, shard_size=ShardSize(count=16))
    run_ingest(plan_ingest(KittiConverter(kitti), tmp / "shards", opts))
    run_ingest(plan_ingest(A2D2Converter(a2d2, A2D2Options()), tmp / "shards", opts))
    return tmp / "shards"


def reshard(shards: Path, out: Path, max_side: int) -> Path:
    """``mtl-data reshard SHARDS --max-side N --to OUT``: the training copies a user keeps."""
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        try:
            mtl_data(["reshard", str(shards), "--max-side", str(max_side), "--to", str(out), "--workers", "1"])
        except SystemExit as exc:
            if exc.code:
                raise RuntimeError("reshard failed") from None
    return out


def resharded_figures(copies: Path, source: str, args) -> dict:
    """On the resharded copy: the floor (its JPEG at the loader's scale) and the loader in
    process and with one worker (best of ``--repeats``)."""
    raws = raw_samples(copies, source)
    flags = reduced_flags(raws, args.size, True)
    out = {"hw": decode(raws[0]).sample.size, "factors": sorted({f for f, fl in REDUCED_FLAGS.items() if fl in flags})}
    out["floor"] = common.best_of(args.repeats, lambda: jpeg_floor(raws, flags)).per(len(raws))
    out["loader"] = {
        w: best_loader([loader_cpu(copies, source, w, args, True) for _ in range(args.repeats)]) for w in (0, 1)
    }
    return out


def raw_samples(shards: Path, source: str) -> list[dict]:
    """Every raw sample of a source (``{"__key__", "__url__", ext: bytes}``), in manifest order."""
    out = []
    for shard in sorted(ShardSet.open(shards).manifest.filter(source=source)["shard"].unique()):
        out += [{"__key__": k, "__url__": shard, **m} for k, m in iter_tar_samples(shards / shard)]
    return out


# ---- floors ---------------------------------------------------------------------------------------


def reduced_flags(raws: list[dict], size: tuple[int, int], letterbox: bool) -> list[int]:
    """Per sample, the ``cv2.imdecode`` flag the loader decodes its JPEG with: the factor of
    ``reduced_decode_factor`` for its stored size and the training size (letterboxed: the content
    size), computed before timing."""
    flags = []
    for raw in raws:
        stored = decode(raw).sample.size
        content = placement(stored, size, letterbox).content_size
        flags.append(REDUCED_FLAGS[reduced_decode_factor(stored, content)])
    return flags


def jpeg_floor(raws: list[dict], flags: list[int]) -> None:
    """The floor: each sample's JPEG decoded at the loader's reduced scale, nothing else."""
    for raw, flag in zip(raws, flags):
        cv2.imdecode(np.frombuffer(raw["jpg"], np.uint8), flag)


def sample_floor(raws: list[dict], flags: list[int]) -> None:
    """The floor + every label member: ``seg.png`` at full size (``IMREAD_UNCHANGED``), the
    ``depth.pts`` points (what the codecs of the sample cost, whoever reads it)."""
    for raw, flag in zip(raws, flags):
        cv2.imdecode(np.frombuffer(raw["jpg"], np.uint8), flag)
        if "seg.png" in raw:
            cv2.imdecode(np.frombuffer(raw["seg.png"], np.uint8), cv2.IMREAD_UNCHANGED)
        if "depth.pts" in raw:
            decode_depth_points(raw["depth.pts"])


def member_costs(raws: list[dict], repeats: int) -> dict[str, float]:
    """CPU ms per sample of each codec piece alone, full size (best of ``repeats``): what bounds
    the loader from below whatever it does around them."""
    pieces = {"jpg": ("jpg", cv2.IMREAD_COLOR), "seg.png": ("seg.png", cv2.IMREAD_UNCHANGED)}
    out = {}
    for name, (ext, flag) in pieces.items():
        if ext in raws[0]:
            decode_all = lambda ext=ext, flag=flag: [cv2.imdecode(np.frombuffer(r[ext], np.uint8), flag) for r in raws]  # noqa: E731
            out[name] = 1000 * common.best_of(repeats, decode_all).cpu / len(raws)
    if "depth.pts" in raws[0]:
        pts = [raw["depth.pts"] for raw in raws]
        # the same depth as schema 1 stored it, for comparison: a 16-bit PNG, inflated whole
        pngs = [cv2.imencode(".png", decode_depth_points(d).to_map(), LABEL_PNG_PARAMS)[1].tobytes() for d in pts]
        idats = [_idat(d) for d in pngs]
        timed = {
            "depth.pts points": lambda: [decode_depth_points(d) for d in pts],
            "depth.png (schema 1) decode": lambda: [decode_png(d) for d in pngs],
            "its zlib inflate alone": lambda: [zlib.decompress(d) for d in idats],
        }
        for name, fn in timed.items():
            out[name] = 1000 * common.best_of(repeats, fn).cpu / len(raws)
        out["kB depth.pts / depth.png"] = (sum(map(len, pts)) / len(pts) / 1e3, sum(map(len, pngs)) / len(pngs) / 1e3)
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


# ---- the loader ---------------------------------------------------------------------------------


def loader_cpu(shards: Path, source: str, workers: int, args, letterbox: bool, tasks=None) -> dict[str, float]:
    """The training loader on one source, over steady-state batches: CPU ms per delivered sample
    of its worker processes and of this process, and wall samples/s (informative)."""
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
    kids0 = common.live_children_cpu()

    def batches():
        for _ in range(args.batches):
            batch = next(it)
        if args.device == "cuda":
            torch.cuda.synchronize()
        assert batch["image"].shape[0] == args.batch_size

    t = common.measure(batches)
    kids1 = common.live_children_cpu()
    n = args.batches * args.batch_size
    it.close()  # stop the workers now
    worker_cpu = sum(kids1[p] - kids0.get(p, 0.0) for p in kids1)
    return {"rate": n / t.wall, "worker_ms": 1000 * worker_cpu / n, "main_ms": 1000 * t.cpu_self / n}


def best_loader(runs: list[dict[str, float]]) -> dict[str, float]:
    """The repeat with the least CPU per sample (workers + this process)."""
    return min(runs, key=lambda x: x["worker_ms"] + x["main_ms"])


def stage_breakdown(raws: list[dict], args, letterbox: bool, repeats: int) -> dict[str, float]:
    """CPU ms per sample of each in-worker stage (best of ``repeats``), the loader's own functions."""
    transform = TransformConfig(args.size, letterbox=letterbox)
    tasks = tuple(t for t in ("seg", "depth", "det2d", "det3d") if any(e.startswith(t + ".") for e in raws[0]))
    targets = TargetConfig(tasks, args.size)
    flags = reduced_flags(raws, args.size, letterbox)
    names = (
        "JPEG alone, reduced as the loader",
        "decode() with a full-size JPEG",
        "decode() (reduced JPEG + labels)",
        "transform_sample",
        "encode_example",
        "collate (per sample)",
    )
    best: dict[str, float] = {}
    clock = time.process_time
    for _ in range(repeats):
        acc = dict.fromkeys(names, 0.0)
        rng = np.random.default_rng(0)
        examples = []
        for raw, flag in zip(raws, flags):
            t0 = clock()
            cv2.imdecode(np.frombuffer(raw["jpg"], np.uint8), flag)
            t1 = clock()
            decode(raw, tasks)
            t2 = clock()
            d = decode(raw, tasks, target_hw=args.size, letterbox=letterbox)
            t3 = clock()
            s = transform_sample(d.sample, transform, rng, image=d.image, depth=d.depth)
            t4 = clock()
            examples.append(encode_example(s, targets))
            t5 = clock()
            for k, v in zip(acc, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                acc[k] += v
        t = clock()
        for i in range(0, len(examples), args.batch_size):
            collate(examples[i : i + args.batch_size])
        acc["collate (per sample)"] = clock() - t
        for k, v in acc.items():
            best[k] = min(best.get(k, np.inf), 1000 * v / len(raws))
    return best


# ---- the plain torch Dataset --------------------------------------------------------------------


def member_index(shards: Path, source: str) -> list[tuple[Path, dict[str, tuple[int, int]]]]:
    """Per sample, in manifest order: its shard file and ``{ext: (data offset, size)}`` of its
    members (listed with ``tarfile`` once, before timing)."""
    out = []
    for shard in sorted(ShardSet.open(shards).manifest.filter(source=source)["shard"].unique()):
        path = shards / shard
        samples: dict[str, dict[str, tuple[int, int]]] = {}
        with tarfile.open(path) as tar:
            for info in tar:
                if info.isfile():
                    key, ext = split_member_name(info.name)
                    samples.setdefault(key, {})[ext] = (info.offset_data, info.size)
        out += [(path, members) for members in samples.values()]
    return out


class PlainDataset(torch.utils.data.Dataset):
    """A first-try map-style dataset over the shard files (module docstring, item 3)."""

    def __init__(self, index: list[tuple[Path, dict[str, tuple[int, int]]]], size: tuple[int, int]):
        self.index, self.size = index, size

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        path, members = self.index[i]
        data = {}
        with open(path, "rb") as f:
            for ext, (offset, size) in members.items():
                f.seek(offset)
                data[ext] = f.read(size)
        h, w = self.size
        bgr = cv2.imdecode(np.frombuffer(data["jpg"], np.uint8), cv2.IMREAD_COLOR)
        sy, sx = h / bgr.shape[0], w / bgr.shape[1]
        rgb = cv2.cvtColor(cv2.resize(bgr, (w, h), interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB)
        image = (rgb.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD  # (H, W, 3)
        item = {"image": torch.from_numpy(image).permute(2, 0, 1).contiguous()}  # (3, H, W)
        if "seg.png" in data:
            seg = cv2.imdecode(np.frombuffer(data["seg.png"], np.uint8), cv2.IMREAD_UNCHANGED)
            item["seg"] = torch.from_numpy(cv2.resize(seg, (w, h), interpolation=cv2.INTER_NEAREST).astype(np.int64))
        if "depth.pts" in data:  # the few numpy lines shards/depthpoints.py documents, then a resize
            depth = decode_depth_points(data["depth.pts"]).to_map()
            depth = cv2.resize(depth, (w, h), interpolation=cv2.INTER_NEAREST).astype(np.float32) / 256.0
            item["depth"] = torch.from_numpy(depth)  # (H, W) metres
        for ext in ("det2d.json", "det3d.json"):
            if ext in data:
                doc = json.loads(data[ext])
                boxes = np.zeros((PLAIN_MAX_BOXES, 7 if ext == "det3d.json" else 4), np.float32)
                got = np.asarray(doc["boxes"], np.float32).reshape(-1, boxes.shape[1])[:PLAIN_MAX_BOXES]
                if ext == "det2d.json":
                    got = got * np.float32([sx, sy, sx, sy])
                boxes[: len(got)] = got
                item[ext.split(".")[0]] = torch.from_numpy(boxes)
                item[ext.split(".")[0] + "_count"] = torch.tensor(len(got))
        return item


def plain_load(index, size: tuple[int, int], batch_size: int) -> None:
    loader = torch.utils.data.DataLoader(PlainDataset(index, size), batch_size=batch_size, num_workers=0)
    for _ in loader:
        pass


# ---- the thesis baseline ------------------------------------------------------------------------------


def build_thesis_files(raws: list[dict], out: Path) -> list[dict[str, Path]]:
    """Per sample: full-size PNG image and one .npy per task, as the reference code stored them."""
    out.mkdir(parents=True)
    files = []
    for i, raw in enumerate(raws):
        d = decode_sample(raw["__key__"], {k: v for k, v in raw.items() if not k.startswith("__")})
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=48, help="frames per dataset")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of every measurement; the best is reported")
    ap.add_argument("--size", type=common.parse_size, default=(256, 512), help="training size HxW")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--batches", type=int, default=12, help="timed batches per loader run")
    ap.add_argument("--warmup-batches", type=int, default=3)
    ap.add_argument("--shuffle-buffer", type=int, default=16)
    ap.add_argument("--workers-max", type=int, default=2)
    ap.add_argument("--stretch", action="store_true", help="also measure the stretched (non-letterbox) resize")
    ap.add_argument("--device", default=None, help="e.g. cuda: batches moved there non_blocking")
    ap.add_argument("--fixtures", type=Path, default=common.default_fixtures())
    ap.add_argument("--reshard", type=int, default=512, help="also measure training copies at this --max-side (0: off)")
    args = ap.parse_args()
    r = args.repeats

    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="mtl-bench-loader-") as tmp:
        tmp = Path(tmp)
        shards = build_shards(args.fixtures, tmp, args.frames)
        # One core for everything timed in this process, as in a worker (floors, workers=0,
        # baselines); the worker processes set the same themselves.
        tune_worker_process()
        torch.set_num_threads(1)
        results = {}
        for source in DATASETS:
            raws = raw_samples(shards, source)
            n = len(raws)
            flags = reduced_flags(raws, args.size, True)
            factors = sorted({f for f, flag in REDUCED_FLAGS.items() if flag in flags})
            res = {"n": n, "hw": decode(raws[0]).sample.size, "factors": factors, "loader": {}}
            res["floor"] = common.best_of(r, lambda raws=raws, flags=flags: jpeg_floor(raws, flags)).per(n)
            res["floor2"] = common.best_of(r, lambda raws=raws, flags=flags: sample_floor(raws, flags)).per(n)
            res["members"] = member_costs(raws, r)
            modes = [("letterbox", True)] + ([("stretch", False)] if args.stretch else [])
            for mode, letterbox in modes:
                for w in range(args.workers_max + 1):
                    runs = [loader_cpu(shards, source, w, args, letterbox) for _ in range(r)]
                    res["loader"][(mode, w)] = best_loader(runs)
            if source == "kitti":  # image + boxes only: no label PNG to decode
                runs = [loader_cpu(shards, source, 0, args, True, tasks=("det2d", "det3d")) for _ in range(r)]
                res["loader"][("letterbox, det2d+det3d only", 0)] = best_loader(runs)
            res["stages"] = stage_breakdown(raws, args, True, r)
            index = member_index(shards, source)
            res["plain"] = common.best_of(r, lambda index=index: plain_load(index, args.size, args.batch_size)).per(n)
            files = build_thesis_files(raws, tmp / f"thesis_{source}")
            res["thesis"] = common.best_of(r, lambda files=files: thesis_load(files, args.size)).per(n)
            res["thesis_tasks"] = sorted({t for f in files for t in f if t != "image"})
            results[source] = res
        if args.reshard:
            copies = reshard(shards, tmp / "resharded", args.reshard)
            for source in DATASETS:
                results[source]["resharded"] = resharded_figures(copies, source, args)

    h, w = args.size
    width = 58
    print(
        f"\nLoader vs JPEG-decode floor at {h}x{w} (letterboxed), batch {args.batch_size}, "
        f"{args.batches} timed batches after {args.warmup_batches}; {os.cpu_count()} CPUs; "
        f"load average (1 min) {load0:.2f} at start, {os.getloadavg()[0]:.2f} at end"
    )
    print("Every ratio is on CPU time (floor or baseline CPU ms/sample over the loader's); wall is informative.")
    for source, res in results.items():
        fh, fw = res["hw"]
        print(f"\n{source}: {res['n']} frames {fw}x{fh}")
        print(f"{'measurement':<{width}}{'CPU ms/sample':>14}{'wall sample/s':>15}{'ratio':>8}  target")
        reduced = ", ".join(f"1/{f}" for f in res["factors"])
        floor = res["floor"].cpu
        print(f"{f'floor: cv2.imdecode of the JPEG at {reduced} (as the loader)':<{width}}{1000 * floor:>14.2f}")
        print(f"{'floor 2 (info): + label members (seg.png, depth.pts)':<{width}}{1000 * res['floor2'].cpu:>14.2f}")
        print(
            "  members alone, CPU ms/sample: "
            + ", ".join(f"{k} {v:.2f}" for k, v in res["members"].items() if not k.startswith("kB"))
        )
        if "kB depth.pts / depth.png" in res["members"]:
            pts_kb, png_kb = res["members"]["kB depth.pts / depth.png"]
            print(f"  depth member, kB: depth.pts {pts_kb:.1f}, as depth.png {png_kb:.1f}")
        for (mode, workers), got in res["loader"].items():
            name = f"loader {mode}, " + ("workers=0 (in process)" if workers == 0 else f"workers={workers}")
            cpu = got["main_ms"] + got["worker_ms"]
            print(f"{name:<{width}}{cpu:>14.2f}{got['rate']:>15.1f}")
            common.print_ratio("floor / loader CPU", 1000 * floor / cpu, width - 2, ">= 0.80")
            common.print_ratio("floor 2 / loader CPU (info)", 1000 * res["floor2"].cpu / cpu, width - 2)
            if workers:  # on a GPU run the main process only pins and copies: the widening is the device's
                common.print_ratio("floor / worker CPU alone", 1000 * floor / got["worker_ms"], width - 2, ">= 0.80")
            print(f"    CPU ms/sample: workers {got['worker_ms']:.2f}, this process {got['main_ms']:.2f}")
        if ("letterbox", 1) in res["loader"] and ("letterbox", 2) in res["loader"]:
            one, two = res["loader"][("letterbox", 1)], res["loader"][("letterbox", 2)]
            common.print_ratio("1 -> 2 workers, wall samples/s", two["rate"] / one["rate"], width - 2, "near 2")
        base = res["loader"][("letterbox", 0)]
        base_cpu = base["main_ms"] + base["worker_ms"]
        plain = res["plain"]
        name = "plain torch Dataset, full-size decode + resize, 1 core"
        print(f"{name:<{width}}{1000 * plain.cpu:>14.2f}{1 / plain.wall:>15.1f}")
        common.print_ratio("plain / loader workers=0, CPU", 1000 * plain.cpu / base_cpu, width - 2, ">= 2")
        tasks = "+".join(res["thesis_tasks"])
        thesis = res["thesis"]
        name = f"thesis per-file: PNG + npy per task ({tasks}), 1 core"
        print(f"{name:<{width}}{1000 * thesis.cpu:>14.2f}{1 / thesis.wall:>15.1f}")
        common.print_ratio("thesis / loader workers=0, CPU", 1000 * thesis.cpu / base_cpu, width - 2, ">= 5")
        print(
            "  in-worker stages, CPU ms/sample (one core): "
            + ", ".join(f"{k} {v:.2f}" for k, v in res["stages"].items())
        )
        if "resharded" in res:
            rs = res["resharded"]
            rh, rw = rs["hw"]
            reduced = ", ".join(f"1/{f}" for f in rs["factors"])
            print(f"resharded (mtl-data reshard --max-side {args.reshard}): {rw}x{rh}")
            print(f"{f'  floor: JPEG at {reduced} (as the loader)':<{width}}{1000 * rs['floor'].cpu:>14.2f}")
            for workers, got in rs["loader"].items():
                cpu = got["main_ms"] + got["worker_ms"]
                name = "  loader, " + ("workers=0 (in process)" if workers == 0 else f"workers={workers}")
                print(f"{name:<{width}}{cpu:>14.2f}{got['rate']:>15.1f}")
                common.print_ratio("floor / loader CPU", 1000 * rs["floor"].cpu / cpu, width - 2)
            full = res["loader"][("letterbox", 0)]
            copy = rs["loader"][0]
            speedup = (full["main_ms"] + full["worker_ms"]) / (copy["main_ms"] + copy["worker_ms"])
            common.print_ratio("loader CPU full-size / resharded, workers=0", speedup, width - 2)
    print(f"\ncommand: {common.command_line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
