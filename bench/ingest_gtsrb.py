"""GTSRB ingest throughput against its codec floor: what the engine costs per sample.

What is compared, and why: design.md section 7 sets the ingest target as ">= 80% of the codec
floor of the work done per frame (image decode + encode, label decode), per worker" and
"near-linear scaling with workers". A GTSRB sample is one ~30x30 to ~50x50 PPM crop around a
sign: its codec work is tiny, so this benchmark measures the engine's fixed cost per sample
(listing, CSV row, validation, meta.json, manifest row, tar member headers, process-pool IPC)
against it. The floor is: read the PPM, decode it, convert RGB->BGR and encode a quality-95
JPEG, single process, on the same files as the ingest, interleaved with it repeat by repeat.

The raw root is a temporary official layout (``GTSRB/Final_Training/Images/<class>/``,
``GTSRB/Final_Test/Images/``, ``GT-final_test.csv``) built from the real fixture images: the 4
training PPMs of classes 00000 and 00020 and the 3 test PPMs, hard-linked under new names
(``<track 5>_<index 5>.ppm``, 30 images per track as in GTSRB; test ``<5 digits>.ppm``), each
with a copy of its real CSV row (CRLF, Width/Height/ROI/ClassId of that image). 24% of the
samples are test samples, as in GTSRB (12,630 of 51,839). Every figure is the best of R repeats
(the machine is shared and noisy). The script prints results and never asserts on speed.

Besides samples/s it prints where the time of one sample goes: the pieces of
``process_frame`` and of ``convert``/``encode_sample`` (frame by frame as in the ingest, and
each part over all samples in a row), the tar writer, the sidecar JSON and the manifest,
pickling a frame and its result; from the 2-worker run, the CPU the pool adds per sample, split
into the main thread, the pool's helper threads and the workers; the engine's pool pattern
alone, with a worker that does no work (one frame per task, as the engine, and 32); and one
possible gain, tar headers built without ``tarfile`` (checked to give the same bytes).

Run: ``.venv/bin/python bench/ingest_gtsrb.py --frames 2000 --repeats 3``.
"""

from __future__ import annotations

import collections
import json
import os
import pickle
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/common.py, shared with the other benchmarks
import common  # noqa: E402
from common import best_of, stage_breakdown  # noqa: E402

from mtl_data.ingest.engine import FrameResult, IngestOptions  # noqa: E402
from mtl_data.ingest.gtsrb import GtsrbConverter  # noqa: E402
from mtl_data.ingest.resize import resize_sample  # noqa: E402
from mtl_data.procs import tune_worker_process  # noqa: E402
from mtl_data.schema.sample import Sample, Sign, make_key  # noqa: E402
from mtl_data.schema.validate import validate  # noqa: E402
from mtl_data.shards import codec  # noqa: E402
from mtl_data.shards.codec import decode_image, encode_image, encode_sample  # noqa: E402
from mtl_data.shards.manifest import rows_to_table, sample_row, write_table  # noqa: E402
from mtl_data.shards.tario import SHARD_MTIME, TarShardWriter  # noqa: E402

TRAIN_CLASSES = ("00000", "00020")
TEST_SHARE = 12_630 / 51_839
TRACK_LEN = 30  # GTSRB: 30 images of one physical sign per track
_ECHO = None  # the prepared result of `_echo` (set in each pool worker)


# ---- raw root ---------------------------------------------------------------------------------


def _csv_rows(csv: Path) -> tuple[str, list[list[str]]]:
    lines = csv.read_text(encoding="utf-8-sig").splitlines()
    return lines[0], [line.split(";") for line in lines[1:] if line.strip()]


def fixture_rows(fixtures: Path) -> dict:
    """The real fixture images and their real CSV rows (exits with a message if one is missing)."""
    official = fixtures / "gtsrb" / "official"
    train_dir, test_dir = official / "GTSRB" / "Final_Training" / "Images", official / "GTSRB" / "Final_Test" / "Images"
    csvs = [train_dir / c / f"GT-{c}.csv" for c in TRAIN_CLASSES] + [official / "GT-final_test.csv"]
    missing = [str(p) for p in csvs if not p.is_file()]
    if missing:
        sys.exit(
            f"error: GTSRB fixtures missing: {missing[0]}; pass --fixtures PATH or set MTL_FIXTURES to "
            f"the folder holding gtsrb/official/"
        )
    out = {"train": {}, "test": None}
    for c, csv in zip(TRAIN_CLASSES, csvs):
        header, rows = _csv_rows(csv)
        out["train"][c] = (header, [(train_dir / c / r[0], r) for r in rows])
    header, rows = _csv_rows(csvs[-1])
    out["test"] = (header, [(test_dir / r[0], r) for r in rows])
    for _, rows in [*out["train"].values(), out["test"]]:
        for path, _ in rows:
            if not path.is_file():
                sys.exit(f"error: GTSRB fixture image missing: {path}")
    return out


def build_raw(fx: dict, root: Path, n: int) -> tuple[Path, int, int]:
    """``n`` samples over the real images: official layout, 24% test, CSV rows copied per image.

    Returns:
        The raw root (the folder holding ``GTSRB/``), the training and the test sample counts.
    """
    n_test = round(n * TEST_SHARE)
    n_train = n - n_test
    per_class = [n_train // len(TRAIN_CLASSES) + (i < n_train % len(TRAIN_CLASSES)) for i in range(len(TRAIN_CLASSES))]
    for c, k in zip(TRAIN_CLASSES, per_class):
        header, rows = fx["train"][c]
        folder = root / "GTSRB" / "Final_Training" / "Images" / c
        folder.mkdir(parents=True)
        lines = [header]
        for i in range(k):
            track, index = divmod(i, TRACK_LEN)
            name = f"{track:05d}_{index:05d}.ppm"
            src, fields = rows[i % len(rows)]
            common.link(src, folder / name)
            lines.append(";".join([name, *fields[1:]]))
        (folder / f"GT-{c}.csv").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    header, rows = fx["test"]
    folder = root / "GTSRB" / "Final_Test" / "Images"
    folder.mkdir(parents=True)
    lines = [header]
    for i in range(n_test):
        src, fields = rows[i % len(rows)]
        common.link(src, folder / f"{i:05d}.ppm")
        lines.append(";".join([f"{i:05d}.ppm", *fields[1:]]))
    (root / "GT-final_test.csv").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    return root, n_train, n_test


# ---- floor, breakdown, scaling ----------------------------------------------------------------


def codec_floor(paths: list[Path]) -> None:
    """The floor: read + decode the PPM, RGB->BGR + JPEG q95 encode."""
    for p in paths:
        rgb = cv2.imdecode(np.frombuffer(p.read_bytes(), np.uint8), cv2.IMREAD_COLOR_RGB)
        cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])


CONVERT_PARTS = (
    "  convert: find table + row (_table, _rows)",
    "  convert: parse + check row (_values)",
    "  convert: read image file",
    "  convert: decode_image (PPM)",
    "  convert: make_key + Sign + Sample",
)
ENCODE_PARTS = ("  encode: encode_image (RGB->BGR, JPEG q95)", "  encode: meta.json (meta_dict + json.dumps)")
TAR_ADD = "rest: TarShardWriter.add (3 members)"
IPC_PARTS = ("ipc: pickle Frame dumps + loads", "ipc: pickle FrameResult dumps + loads")


def _new_sample(conv, f, row, image, class_id, roi) -> Sample:
    """What the end of ``GtsrbConverter.convert`` builds."""
    return Sample(
        key=make_key(conv.name, f.split, f.id),
        source=conv.name,
        split=f.split,
        id=f.id,
        image=image,
        orig_size=image.shape[:2],
        sequence=row.track,
        sign=None if class_id is None else Sign(class_id, roi),
    )


def _roundtrip(obj):
    return pickle.loads(pickle.dumps(obj, pickle.HIGHEST_PROTOCOL))


def gtsrb_parts(conv: GtsrbConverter, opts: IngestOptions, tar_dir: Path):
    """The parts of ``convert`` and ``encode_sample`` as the converter calls them, what the engine
    does with a result outside ``process_frame`` (tar members) and what the pool adds (pickling
    the frame and the result).

    Returns:
        ``(parts, part_major, close)``: ``parts`` is pass 2 of `common.stage_breakdown` (frame by
        frame, interleaved as in the ingest); ``part_major(frames, repeats)`` times each part
        over all frames in a row (warm caches: a lower bound), and the `common.STAGES` likewise;
        ``close()`` removes the scratch tar.
    """
    writers = []

    def writer(name: str) -> TarShardWriter:
        writers.append(TarShardWriter(tar_dir / f"{name}.tar.part", tar_dir / f"{name}.tar"))
        return writers[-1]

    frame_major_tar = [None]

    def parts(tick, f) -> None:
        def find():
            table = conv._table(f.paths["csv"])
            return table, conv._rows(table)[f.id]

        table, row = tick(CONVERT_PARTS[0], find)
        width, height, roi, class_id = tick(CONVERT_PARTS[1], conv._values, table, row)
        data = tick(CONVERT_PARTS[2], row.image.read_bytes)
        image = tick(CONVERT_PARTS[3], decode_image, data)
        sample = tick(CONVERT_PARTS[4], _new_sample, conv, f, row, image, class_id, roi)
        tick(ENCODE_PARTS[0], encode_image, image, opts.image_format, opts.jpeg_quality)
        tick(ENCODE_PARTS[1], lambda: codec._json(codec.meta_dict(sample)))
        members = encode_sample(sample, opts.image_format, opts.jpeg_quality)
        result = FrameResult(f.id, sample.key, members, sample_row(sample), notes=sample.notes)
        if frame_major_tar[0] is None:
            frame_major_tar[0] = writer("frame_major")
        tick(TAR_ADD, frame_major_tar[0].add, sample.key, members)
        tick(IPC_PARTS[0], _roundtrip, f)
        tick(IPC_PARTS[1], _roundtrip, result)

    def part_major(frames, repeats: int) -> dict[str, float]:
        n = len(frames)
        loop = lambda fn, xs: best_of(repeats, lambda: [fn(x) for x in xs]).cpu / n  # noqa: E731
        found = [(conv._table(f.paths["csv"]), f) for f in frames]
        found = [(t, conv._rows(t)[f.id], f) for t, f in found]
        values = [conv._values(t, row) for t, row, _ in found]
        datas = [row.image.read_bytes() for _, row, _ in found]
        images = [decode_image(d) for d in datas]
        samples = [conv.convert(f) for f in frames]
        members = [encode_sample(s, opts.image_format, opts.jpeg_quality) for s in samples]
        results = [
            FrameResult(f.id, s.key, m, sample_row(s), notes=s.notes) for f, s, m in zip(frames, samples, members)
        ]
        num_det = len(conv.class_tables().get("det2d", [])) or None
        out = {
            "convert": loop(conv.convert, frames),
            CONVERT_PARTS[0]: loop(lambda f: conv._rows(conv._table(f.paths["csv"]))[f.id], frames),
            CONVERT_PARTS[1]: loop(lambda x: conv._values(x[0], x[1]), found),
            CONVERT_PARTS[2]: loop(lambda x: x[1].image.read_bytes(), found),
            CONVERT_PARTS[3]: loop(decode_image, datas),
            CONVERT_PARTS[4]: loop(
                lambda i: _new_sample(conv, found[i][2], found[i][1], images[i], values[i][3], values[i][2]), range(n)
            ),
            "resize_sample": loop(lambda s: resize_sample(s, opts.max_side), samples),
            "validate": loop(lambda s: validate(s, num_det), samples),
            "encode_sample": loop(lambda s: encode_sample(s, opts.image_format, opts.jpeg_quality), samples),
            ENCODE_PARTS[0]: loop(lambda im: encode_image(im, opts.image_format, opts.jpeg_quality), images),
            ENCODE_PARTS[1]: loop(lambda s: codec._json(codec.meta_dict(s)), samples),
            "sample_row": loop(sample_row, samples),
            IPC_PARTS[0]: loop(_roundtrip, frames),
            IPC_PARTS[1]: loop(_roundtrip, results),
        }
        tar_times = []
        for k in range(repeats):
            w = writer(f"part_major{k}")
            t = time.process_time()
            for s, m in zip(samples, members):
                w.add(s.key, m)
            tar_times.append((time.process_time() - t) / n)
        out[TAR_ADD] = min(tar_times)
        return out

    def close() -> None:
        for w in writers:
            w.abort()

    return parts, part_major, close


# ---- possible gains (measured, not used by the library) ---------------------------------------


def ustar_header(name: bytes, size: int) -> bytes:
    """The 512-byte header ``TarShardWriter`` writes for a member of ``size`` bytes (names < 100
    bytes, as every key here), built directly: the same bytes as ``tarfile`` in PAX format."""
    b = bytearray(512)
    b[0 : len(name)] = name
    b[100:108] = b"0000444\x00"  # mode
    b[108:116] = b"0000000\x00"  # uid
    b[116:124] = b"0000000\x00"  # gid
    b[124:136] = b"%011o\x00" % size
    b[136:148] = b"%011o\x00" % SHARD_MTIME
    b[148:156] = b"        "  # checksum field counts as spaces
    b[156:157] = b"0"  # regular file
    b[257:265] = b"ustar\x0000"  # POSIX magic + version
    b[148:156] = b"%06o\x00 " % sum(b)
    return bytes(b)


def direct_tar_add(f, key: str, members: list[tuple[str, bytes]]) -> None:
    """Append a sample's members to an open file like ``TarShardWriter.add``, without ``tarfile``."""
    for ext, data in members:
        f.write(ustar_header(f"{key}.{ext}".encode(), len(data)))
        f.write(data)
        if len(data) % 512:
            f.write(b"\0" * (512 - len(data) % 512))


def tar_gain(conv: GtsrbConverter, frames, opts: IngestOptions, tmp: Path, repeats: int) -> dict:
    """CPU ms/sample of ``TarShardWriter.add`` vs `direct_tar_add` on the same members, and whether
    the two files hold the same bytes (before tarfile's end-of-archive blocks)."""
    samples = [conv.convert(f) for f in frames]
    members = [(s.key, encode_sample(s, opts.image_format, opts.jpeg_quality)) for s in samples]
    n = len(members)
    lib, direct = [], []
    for k in range(repeats):
        w = TarShardWriter(tmp / f"lib{k}.tar.part", tmp / f"lib{k}.tar")
        t = time.process_time()
        for key, m in members:
            w.add(key, m)
        lib.append((time.process_time() - t) / n)
        end = w.size
        w.commit()
        with open(tmp / f"direct{k}.tar", "wb") as f:
            t = time.process_time()
            for key, m in members:
                direct_tar_add(f, key, m)
            direct.append((time.process_time() - t) / n)
    same = (tmp / "lib0.tar").read_bytes()[:end] == (tmp / "direct0.tar").read_bytes()
    return {"lib": 1000 * min(lib), "direct": 1000 * min(direct), "same": same}


def _echo_init(result: FrameResult) -> None:
    global _ECHO
    _ECHO = result


def _echo(frames):
    """A pool task that does no work: one result of a real sample's size per frame."""
    return [_ECHO for _ in frames] if isinstance(frames, list) else _ECHO


def ipc_cost(conv: GtsrbConverter, frames, opts: IngestOptions, workers: int, chunk: int, repeats: int) -> dict:
    """The engine's pool pattern (``spawn``, at most 4 tasks per worker in flight, results in
    order) with a worker that returns a prepared result: what the pool alone costs per sample,
    one frame per task (``chunk`` = 1, as the engine) or ``chunk`` frames per task."""
    sample = conv.convert(frames[0])
    result = FrameResult(
        frames[0].id,
        sample.key,
        encode_sample(sample, opts.image_format, opts.jpeg_quality),
        sample_row(sample),
        notes=sample.notes,
    )
    tasks = (
        [frames[i] for i in range(len(frames))]
        if chunk == 1
        else [frames[i : i + chunk] for i in range(0, len(frames), chunk)]
    )
    best = None
    for _ in range(repeats):
        with ProcessPoolExecutor(
            workers, mp_context=get_context("spawn"), initializer=_echo_init, initargs=(result,)
        ) as pool:
            pool.submit(time.sleep, 0.2).result()  # started
            u0 = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
            t, tt = time.perf_counter(), time.thread_time()
            window, todo = collections.deque(), iter(tasks)
            for task in todo:
                window.append(pool.submit(_echo, task))
                if len(window) >= 4 * workers:
                    break
            while window:
                window.popleft().result()
                nxt = next(todo, None)
                if nxt is not None:
                    window.append(pool.submit(_echo, nxt))
            wall, main_thread = time.perf_counter() - t, time.thread_time() - tt
            self_cpu = resource.getrusage(resource.RUSAGE_SELF)
        u1 = [self_cpu, resource.getrusage(resource.RUSAGE_CHILDREN)]  # workers reaped at shutdown
        cpu_self = u1[0].ru_utime + u1[0].ru_stime - u0[0].ru_utime - u0[0].ru_stime
        if best is None or wall < best["wall"]:
            best = {"wall": wall, "main_thread": main_thread, "self": cpu_self}
    n = len(frames)
    return {k: 1000 * v / n for k, v in best.items()}


def manifest_cost(conv: GtsrbConverter, frames, out: Path, repeats: int) -> tuple[float, float]:
    """CPU seconds of the two things ``run_ingest`` does with the manifest rows of these frames:
    the sidecar JSON (written per shard, read back at the end) and the manifest (Arrow table,
    zstd Parquet)."""
    rows = [sample_row(conv.convert(f)) for f in frames]
    for i, r in enumerate(rows):
        r.update(shard="gtsrb/train-000000.tar", position=i, offset=512 * i)
    side = out / "sidecar.json"
    t_side = best_of(repeats, lambda: (side.write_text(json.dumps({"rows": rows})), json.loads(side.read_text())))
    return t_side.cpu, best_of(repeats, lambda: write_table(rows_to_table(rows), out / "manifest.parquet")).cpu


# ---- main -------------------------------------------------------------------------------------


def main() -> int:
    ap = common.parser(__doc__, frames=2000, scale_factor=5)
    args = ap.parse_args()
    n, r, n_scale = args.frames, args.repeats, args.scale_frames or 5 * args.frames

    # The process settings `mtl-data ingest` uses (one OpenCV thread, glibc buffers kept): the
    # floor and the inline ingest both run under them, so the comparison stays like for like.
    tune_worker_process()
    load0 = os.getloadavg()[0]
    fx = fixture_rows(args.fixtures)
    sizes = [
        decode_image(src.read_bytes()).shape[:2] for _, rows in [*fx["train"].values(), fx["test"]] for src, _ in rows
    ]
    with tempfile.TemporaryDirectory(prefix="mtl-bench-gtsrb-") as tmp:
        tmp = Path(tmp)
        t_build = time.perf_counter()
        root, n_train, n_test = build_raw(fx, tmp / "raw", n)
        t_build = time.perf_counter() - t_build
        conv = GtsrbConverter(root)
        frames = conv.frames()
        if len(frames) != n:
            sys.exit(f"error: the raw root lists {len(frames)} frames, expected {n}")
        paths = [f.paths["image"] for f in frames]
        opts = IngestOptions(shard_size=args.shard_size, overwrite=True, workers=1)
        m = common.floors_and_ingest(
            r,
            {"floor: read + PPM dec + JPEG q95 enc": lambda: codec_floor(paths)},
            lambda: GtsrbConverter(root),
            tmp,
            opts,
        )
        floor, ingest, best = next(iter(m.floors.values())), m.ingest, m.best
        ingest_plan = common.Timing(
            min(x["cpu"] + x["plan"] for x in m.runs),
            min(x["run"] + x["plan_wall"] for x in m.runs),
            min(x["cpu_self"] + x["plan"] for x in m.runs),
        )
        (tmp / "tar").mkdir()
        parts, part_major, close = gtsrb_parts(conv, opts, tmp / "tar")
        in_context = stage_breakdown(conv, opts, frames, r, parts)
        warm = part_major(frames, r)
        close()
        t_side, t_manifest = manifest_cost(conv, frames, tmp, r)
        gain = tar_gain(conv, frames, opts, tmp / "tar", r)
        ipc = {(w, c): ipc_cost(conv, frames, opts, w, c, r) for w, c in ((1, 1), (2, 1), (2, 32))}
        scale_root = build_raw(fx, tmp / "raw_scale", n_scale)[0]
        scale = common.scaling(lambda: GtsrbConverter(scale_root), tmp, n_scale, args)

    w = 50
    common.print_header(
        f"GTSRB ingest vs codec floor: {n} samples ({n_train} train, {n_test} test; "
        f"{len(sizes)} real PPMs, {min(s[1] for s in sizes)}x{min(s[0] for s in sizes)} to "
        f"{max(s[1] for s in sizes)}x{max(s[0] for s in sizes)}), best of {r}",
        w,
        f"; load average (1 min) {load0:.2f} at start, {os.getloadavg()[0]:.2f} at end",
        unit="sample",
    )
    common.print_floor_table(m.floors, ingest, n, w, 3)
    common.print_row("ingest, workers=1, plan_ingest + run_ingest (info)", ingest_plan.per(n), w, 3)
    print(
        f"  fixed overhead of the engine per sample (ingest - floor, CPU): {1000 * (ingest.cpu - floor.cpu) / n:.3f} "
        f"ms; plan_ingest adds {1000 * best['plan'] / n:.3f} ms/sample (CSV parsing, listing, sorting)"
    )
    print(
        f"  {best['faults'] / n:.2f} minor page faults/sample; plan_ingest {1000 * best['plan']:.1f} ms CPU for {n} "
        f"samples; raw root built in {t_build:.2f} s (wall)"
    )
    common.print_scaling(scale, n_scale, unit="sample")
    print(
        f"\nThe pool alone ({n} samples; the engine's pattern, a worker that returns a prepared result of a real "
        f"sample's size), ms/sample"
    )
    print(f"{'':<34}{'wall':>8}{'main process CPU':>18}{'main thread CPU':>17}")
    for (wk, c), v in ipc.items():
        name = f"{wk} worker{'s' if wk > 1 else ''}, {c} frame{'s' if c > 1 else ''} per task"
        print(f"{name:<34}{v['wall']:>8.3f}{v['self']:>18.3f}{v['main_thread']:>17.3f}")

    print(
        f"\nPer-stage CPU time of one worker, ms/sample (floor = {1000 * floor.cpu / n:.3f}); 'in context' = "
        f"frame by frame, "
        f"interleaved as in the ingest\n  (the parts of convert/encode are timed between the tar and pickle steps, "
        f"so they read high and do not add up to their stage); "
        f"'warm' = each part over all samples in a row"
    )
    print(f"  {'stage':<52}{'in context':>11}{'warm':>8}")

    def row(name, label=None):
        print(f"  {label or name:<52}{1000 * in_context[name]:>11.3f}{1000 * warm[name]:>8.3f}")

    row("convert")
    for name in CONVERT_PARTS:
        row(name)
    rest = {"w": warm["convert"] - sum(warm[p] for p in CONVERT_PARTS)}
    print(f"  {'  convert: the rest (field checks)':<52}{'':>11}{1000 * rest['w']:>8.3f}")
    for name in ("resize_sample", "validate", "encode_sample", *ENCODE_PARTS, "sample_row"):
        row(name)
    print(
        f"  {'sum of process_frame stages':<52}{1000 * sum(in_context[k] for k in common.STAGES):>11.3f}"
        f"{1000 * sum(warm[k] for k in common.STAGES):>8.3f}"
    )
    print(f"  {'in run_ingest: inside process_frame':<52}{1000 * best['process_frame'] / n:>11.3f}")
    print(f"  {'in run_ingest: the rest':<52}{1000 * (best['run'] - best['process_frame']) / n:>11.3f}")
    row(TAR_ADD, "  " + TAR_ADD[len("rest: ") :])
    print(f"  {'  sidecar JSON of the rows (written, read back)':<52}{'':>11}{1000 * t_side / n:>8.3f}")
    print(f"  {'  manifest (rows_to_table + zstd Parquet)':<52}{'':>11}{1000 * t_manifest / n:>8.3f}")
    for name in IPC_PARTS:
        row(name)
    print(
        f"\nPossible gain (measured here, NOT used by the library): the 3 tar members of a sample with "
        f"TarShardWriter.add (tarfile, PAX format) {gain['lib']:.3f} ms -> headers built directly "
        f"{gain['direct']:.3f} ms (the same bytes: {gain['same']})"
    )
    print(f"\ncommand: {common.command_line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
