"""Cityscapes ingest throughput against its codec floor, measured in the same run.

What is compared, and why: design.md section 7 sets the ingest target as ">= 80% of the codec
floor of the work done per frame (image decode + encode, label decode), per worker" and
"near-linear scaling with workers". For a Cityscapes frame with every package that floor is:
read + decode the 2048x1024 ``leftImg8bit`` PNG, the ``labelIds`` PNG and the 16-bit disparity
PNG, convert RGB->BGR and encode a quality-95 JPEG (floor 1, the issue's floor); floor 2 adds
the encodes the output also needs, ``seg.png`` (with ``LABEL_PNG_PARAMS``) and ``depth.pts``
(``encode_depth_points``, schema 2) of the frame's real converted maps, as the library writes
them (the same bytes). Both are timed
single process, on the same frames as the ingest, interleaved with it repeat by repeat. The
ingest does more: label ids -> train ids, disparity -> quantized depth, camera and gtBbox3d
json (det2d, det3d), validation, the manifest row and the shard.

The only real Cityscapes frame among the fixtures (``mmseg_pseudo``, frankfurt_000000_000294)
is downscaled to 256x128, so the benchmark builds one real-size 2048x1024 frame from it:

* ``leftImg8bit``: the real image upscaled x8 (bicubic) plus Gaussian noise (``--noise``, 0.5
  grey levels by default), written as a PNG at zlib level 6: ~2.2 MB, about a real frame's
  size (leftImg8bit_trainvaltest.zip is quoted at 11 GB for 5,000 frames; without the noise
  the upscaled image compresses to ~1.2 MB and decodes faster than a real photo: PNG decode
  time follows the compressed size).
* ``gtFine_labelIds``: the real label upscaled x8 with nearest neighbour.
* ``disparity``: synthesized with the real camera (``camera_sample/quoted_camera.json``:
  baseline 0.209 m, fx 2262.52, camera 1.22 m above the road, pitch 0.038 rad): road-like
  classes lie on the ground plane, every other class stands upright at the distance of the
  ground below it in its column, sky / ego vehicle / out of roi are invalid (0); Gaussian
  sub-pixel noise (``--disparity-noise``, 0.002 px by default) and 2% random holes, stored as
  ``256 d + 1``: ~0.75 MB, about a real disparity PNG's size (the disparity package is quoted
  at 3.5-3.8 GB for 5,000 frames). Without noise the PNG is 0.16 MB; with 0.25 px, 2.7 MB: the
  noise sets how long the disparity decode and the depth PNG encode take.
* ``camera.json``: the real camera json; ``gtBbox3d.json``: the real cityscapesScripts sample
  (one car, 2048x1024, the same intrinsics).

That frame is hard-linked as ``val/frankfurt/frankfurt_000000_<i>`` for N frames. Every figure
is the best of R repeats (the machine is shared and noisy); every ratio is on CPU time
(``bench/common.py``), wall times are printed for information. The script prints results and
never asserts on speed.

Run: ``.venv/bin/python bench/ingest_cityscapes.py --frames 30 --repeats 3``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/common.py, shared with the other benchmarks
import common  # noqa: E402
from common import best_of, stage_breakdown  # noqa: E402

from mtl_data.ingest import cityscapes as cs  # noqa: E402
from mtl_data.ingest.cityscapes import CityscapesConverter  # noqa: E402
from mtl_data.ingest.engine import IngestOptions  # noqa: E402
from mtl_data.ingest.readers import read_image  # noqa: E402
from mtl_data.procs import tune_worker_process  # noqa: E402
from mtl_data.schema import cityscapes_geometry as cg  # noqa: E402
from mtl_data.schema import geometry as geo  # noqa: E402
from mtl_data.schema.taxonomy import CITYSCAPES_LABEL_IDS  # noqa: E402
from mtl_data.schema.validate import _check_depth  # noqa: E402
from mtl_data.shards import codec  # noqa: E402
from mtl_data.shards.codec import LABEL_PNG_PARAMS, encode_image  # noqa: E402
from mtl_data.shards.depthpoints import decode_depth_points, encode_depth_points  # noqa: E402

CITY, NATIVE_SPLIT, FIXTURE_ID = "frankfurt", "val", "frankfurt_000000_000294"
SIZE = (1024, 2048)  # (height, width) of every Cityscapes frame
GROUND = (6, 7, 8, 9, 10, 22)  # ground, road, sidewalk, parking, rail track, terrain
INVALID = (0, 1, 2, 3, 23)  # unlabeled, ego vehicle, rectification border, out of roi, sky


# ---- one real-size frame ----------------------------------------------------------------------


def fixture_paths(fixtures: Path) -> dict[str, Path]:
    """The real fixture files the frame is built from (exits with a message if one is missing)."""
    c = fixtures / "cityscapes"
    paths = {
        "image": c / "mmseg_pseudo" / "leftImg8bit" / NATIVE_SPLIT / CITY / f"{FIXTURE_ID}_leftImg8bit.png",
        "label": c / "mmseg_pseudo" / "gtFine" / NATIVE_SPLIT / CITY / f"{FIXTURE_ID}_gtFine_labelIds.png",
        "camera": c / "camera_sample" / "quoted_camera.json",
        "boxes": c / "gtBbox3d_sample" / "cityscapesScripts_docs_sample_gtBbox3d.json",
    }
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        sys.exit(
            f"error: Cityscapes fixtures missing: {missing[0]} ({len(missing)} of {len(paths)} files); pass "
            f"--fixtures PATH or set MTL_FIXTURES to the folder holding cityscapes/mmseg_pseudo/"
        )
    return paths


def synth_disparity(labels: np.ndarray, camera: dict, rng: np.random.Generator, noise_px: float) -> np.ndarray:
    """A plausible uint16 disparity PNG content (``256 d + 1``, 0 = invalid) for a label map.

    Road-like classes lie on the ground plane seen by the real camera; any other class stands
    upright at the depth of the nearest ground pixel below it in its column (60 m where there is
    none); sky, ego vehicle and out-of-roi pixels are invalid. Sub-pixel noise and holes as SGM
    leaves them.
    """
    h, w = labels.shape
    fx, fy, v0 = (camera["intrinsic"][k] for k in ("fx", "fy", "v0"))
    ext = camera["extrinsic"]
    pitch, height, baseline = ext["pitch"], ext["z"], ext["baseline"]
    rows = (np.arange(h, dtype=np.float64) - v0) / fy
    denom = rows * np.cos(pitch) + np.sin(pitch)  # the ground plane along each image row
    z_row = np.where(denom > 1e-3, height / np.maximum(denom, 1e-3), np.inf)
    ground = np.isin(labels, GROUND) & np.isfinite(z_row)[:, None]
    # for every pixel, the nearest ground row at or below it in its column (-1: none)
    idx = np.where(ground, np.arange(h)[:, None], -1)
    below = np.flipud(np.maximum.accumulate(np.flipud(np.where(idx < 0, -1, h - 1 - idx)), axis=0))
    foot = np.where(below >= 0, h - 1 - below, -1)
    z = np.where(foot >= 0, z_row[np.clip(foot, 0, h - 1)], 60.0)
    z = np.clip(z, 2.0, 250.0)
    d = baseline * fx / z + rng.normal(0.0, noise_px, z.shape)
    p = np.clip(np.rint(d * 256.0) + 1.0, 1, 65535).astype(np.uint16)
    p[np.isin(labels, INVALID) | (rng.random(z.shape) < 0.02)] = 0
    return p


def build_frame(fx: dict[str, Path], out: Path, noise: float, disparity_noise: float, seed: int = 0) -> dict[str, Path]:
    """The real-size frame's five files under ``out`` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    small = cv2.imread(str(fx["image"]), cv2.IMREAD_UNCHANGED)
    image = cv2.resize(small, SIZE[::-1], interpolation=cv2.INTER_CUBIC)
    if noise > 0:
        image = np.clip(image + rng.normal(0.0, noise, image.shape), 0, 255).round().astype(np.uint8)
    labels = cv2.resize(cv2.imread(str(fx["label"]), cv2.IMREAD_UNCHANGED), SIZE[::-1], interpolation=cv2.INTER_NEAREST)
    camera = json.loads(fx["camera"].read_text())
    out.mkdir(parents=True)
    files = {
        "image": out / "leftImg8bit.png",
        "label": out / "labelIds.png",
        "disparity": out / "disparity.png",
        "camera": fx["camera"],
        "boxes": fx["boxes"],
    }
    level = [cv2.IMWRITE_PNG_COMPRESSION, 6]
    cv2.imwrite(str(files["image"]), image, level)
    cv2.imwrite(str(files["label"]), labels, level)
    cv2.imwrite(str(files["disparity"]), synth_disparity(labels, camera, rng, disparity_noise), level)
    return files


def build_raw(files: dict[str, Path], root: Path, n: int) -> Path:
    """The frame hard-linked as ``val/frankfurt/frankfurt_000000_<i>`` in every package folder.

    Returns:
        The raw Cityscapes root.
    """
    for role, (package, suffix) in cs.ROLES.items():
        folder = root / package / NATIVE_SPLIT / CITY
        folder.mkdir(parents=True)
        for i in range(n):
            common.link(files[role], folder / f"{CITY}_000000_{i:06d}{suffix}")
    return root


# ---- floors and breakdown ---------------------------------------------------------------------


def _decode(path: Path, flags: int) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), flags)


def codec_floor(frames, seg: np.ndarray | None, depth16: np.ndarray | None) -> None:
    """The floor: read + decode leftImg8bit, labelIds and disparity PNGs, RGB->BGR + JPEG q95
    [+ seg PNG and depth.pts encodes]."""
    for f in frames:
        rgb = _decode(f.paths["image"], cv2.IMREAD_COLOR_RGB)
        _decode(f.paths["label"], cv2.IMREAD_UNCHANGED)
        _decode(f.paths["disparity"], cv2.IMREAD_UNCHANGED)
        cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
        # the encodes the library writes seg.png / depth.pts with: the same bytes as the ingest's
        if seg is not None:
            cv2.imencode(".png", seg, LABEL_PNG_PARAMS)
        if depth16 is not None:
            encode_depth_points(depth16)


def cityscapes_parts(conv: CityscapesConverter, opts: IngestOptions):
    """Pass 2 of `common.stage_breakdown`: the parts of ``convert``, ``validate`` (depth check),
    ``encode_sample`` and ``sample_row``, with the functions the library calls."""
    n_ids = len(CITYSCAPES_LABEL_IDS)

    def parts(tick, f) -> None:
        p = f.paths
        image = tick(
            "  convert: read + decode leftImg8bit PNG",
            read_image,
            p["image"],
            "leftImg8bit image missing",
            "leftImg8bit image does not decode",
        )
        camera = tick(
            "  convert: camera json + gtBbox3d json (read, check)",
            lambda: (cs._read_camera(p["camera"], need_baseline=True), cs._read_boxes_json(p["boxes"], SIZE))[0],
        )
        boxes_doc = cs._read_boxes_json(p["boxes"], SIZE)
        label = tick("  convert: read + decode labelIds PNG", cs._read_png, p["label"], "labelIds PNG")
        seg = tick(
            "  convert: label id check (max) + cv2.LUT", lambda: (label.max() >= n_ids, cv2.LUT(label, conv.seg_lut))[1]
        )
        values = tick("  convert: read + decode disparity PNG", cs._read_png, p["disparity"], "disparity PNG")
        table = tick(
            "  convert: depth table (65,536 values)",
            lambda: cg.disparity_to_depth(
                cg.disparity_from_png(np.arange(1 << 16)), camera["baseline"], camera["K"][0, 0]
            ),
        )
        tick(
            "  convert: clipped count (table > max)[values]",
            lambda: int(np.count_nonzero((table > geo.MAX_DEPTH_M)[values])),
        )
        depth = tick("  convert: quantize_depth(table)[values] (gather)", lambda: geo.quantize_depth(table)[values])
        det2d, det3d = tick("  convert: _boxes (det2d, det3d)", conv._boxes, p["boxes"], boxes_doc)
        tick("  validate: depth check (_check_depth)", _check_depth, depth)
        tick("  encode: encode_image (RGB->BGR, JPEG q95)", encode_image, image, opts.image_format, opts.jpeg_quality)
        tick("  encode: seg PNG (8-bit, no filter)", codec._png, seg, LABEL_PNG_PARAMS)
        d16 = tick("  encode: depth rint/uint16", common.depth_u16, depth)
        tick("  encode: depth.pts", encode_depth_points, d16)
        tick("  sample_row: np.bincount(seg)", lambda: np.bincount(seg.ravel(), minlength=256))
        tick("  sample_row: depth[depth > 0], min, max", lambda: (lambda v: (v.min(), v.max()))(depth[depth > 0]))

    return parts


def possible_gains(seg: np.ndarray, depth: np.ndarray, repeats: int) -> dict:
    """CPU milliseconds of whole-map steps the library does and of equivalent calls it does not use
    (checked to give the same result); and this dense depth map as ``depth.pts`` (what the library
    writes) against the schema 1 ``depth.png`` it no longer writes, without and with a row filter
    (time and size)."""
    t = lambda fn: 1000 * best_of(max(repeats, 7), fn).cpu  # noqa: E731
    bincount = lambda: np.bincount(seg.ravel(), minlength=256)  # noqa: E731
    hist = lambda: cv2.calcHist([seg], [0], None, [256], [0, 256]).ravel().astype(np.int64)  # noqa: E731
    valid = lambda: (lambda v: (v.size, v.min(), v.max()))(depth[depth > 0])  # noqa: E731

    def minmax():  # depth >= 0 everywhere: zeros masked out of the minimum, not copied
        count = cv2.countNonZero(depth)
        lo = cv2.minMaxLoc(depth, mask=(depth > 0).view(np.uint8))[0]
        return count, np.float32(lo), depth.max()

    depth16 = common.depth_u16(depth)
    sub = [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB]
    encoded = {
        name: (t(lambda params=params: codec._png(depth16, params)), codec._png(depth16, params))
        for name, params in (("none", LABEL_PNG_PARAMS), ("sub", sub))
    }
    encoded["pts"] = (t(lambda: encode_depth_points(depth16)), encode_depth_points(depth16))
    same = all(
        np.array_equal(cv2.imdecode(np.frombuffer(encoded[k][1], np.uint8), cv2.IMREAD_UNCHANGED), depth16)
        for k in ("none", "sub")
    ) and np.array_equal(decode_depth_points(encoded["pts"][1]).to_map(), depth16)
    return {
        "bincount": (t(bincount), t(hist), bool(np.array_equal(bincount(), hist()))),
        "depth_valid": (t(valid), t(minmax), tuple(map(float, valid())) == tuple(map(float, minmax()))),
        "depth_member": {k: (ms_, len(b) / 1000) for k, (ms_, b) in encoded.items()} | {"lossless": bool(same)},
    }


# ---- main -------------------------------------------------------------------------------------


def main() -> int:
    ap = common.parser(__doc__, frames=30, scale_factor=3)
    ap.add_argument(
        "--noise",
        type=float,
        default=0.5,
        help="Gaussian noise (grey levels) added to the upscaled image (its PNG size, ~2.2 MB at 0.5)",
    )
    ap.add_argument(
        "--disparity-noise",
        type=float,
        default=0.002,
        help="Gaussian noise (px) of the synthetic disparity (its PNG size, ~0.75 MB at 0.002)",
    )
    args = ap.parse_args()
    n, r, n_scale = args.frames, args.repeats, args.scale_frames or 3 * args.frames

    # The process settings `mtl-data ingest` uses (one OpenCV thread, glibc buffers kept): the
    # floor and the inline ingest both run under them, so the comparison stays like for like.
    tune_worker_process()
    load0 = os.getloadavg()[0]
    fx = fixture_paths(args.fixtures)
    with tempfile.TemporaryDirectory(prefix="mtl-bench-cityscapes-") as tmp:
        tmp = Path(tmp)
        files = build_frame(fx, tmp / "frame", args.noise, args.disparity_noise)
        kb = {k: files[k].stat().st_size / 1000 for k in ("image", "label", "disparity")}
        root = build_raw(files, tmp / "raw", max(n, n_scale))
        conv = CityscapesConverter(root)
        frames = conv.frames()[:n]
        opts = IngestOptions(limit=n, shard_size=args.shard_size, overwrite=True, workers=1)
        first = conv.convert(frames[0])  # all frames are equal: its maps are every frame's
        depth16 = common.depth_u16(first.depth)
        m = common.floors_and_ingest(
            r,
            {
                "floor 1: 3 PNG dec (image, labelIds, disp.) + JPEG enc": lambda: codec_floor(frames, None, None),
                "floor 2: floor 1 + seg PNG + depth.pts enc": lambda: codec_floor(frames, first.seg, depth16),
            },
            lambda: CityscapesConverter(root),
            tmp,
            opts,
        )
        stages = stage_breakdown(conv, opts, frames, r, cityscapes_parts(conv, opts))
        scale = common.scaling(lambda: CityscapesConverter(root), tmp, n_scale, args)
        gains = possible_gains(first.seg, first.depth, r)
        valid_px = int(np.count_nonzero(first.depth))
        out_kb = {
            "seg": len(codec._png(first.seg, LABEL_PNG_PARAMS)) / 1000,
            "depth": len(encode_depth_points(depth16)) / 1000,
        }

    w = 56
    tasks = ", ".join(first.tasks)
    common.print_header(
        f"Cityscapes ingest vs codec floor: {n} frames 2048x1024 (leftImg8bit {kb['image']:.0f} kB, "
        f"labelIds {kb['label']:.0f} kB, disparity {kb['disparity']:.0f} kB; {valid_px} px of depth; "
        f"tasks {tasks}; out: seg.png {out_kb['seg']:.0f} kB, depth.pts {out_kb['depth']:.0f} kB), "
        f"best of {r}",
        w,
        f"; load average (1 min) {load0:.2f} at start, {os.getloadavg()[0]:.2f} at end",
    )
    common.print_floor_table(m.floors, m.ingest, n, w)
    common.print_ingest_usage(m.best, n)
    common.print_scaling(scale, n_scale)
    common.print_stages(stages, m.best, n, common.floors_note(m.floors, n), 54)
    g, d = gains["bincount"], gains["depth_valid"]
    print(
        f"\nPossible gains (CPU, measured here, NOT used by the library): sample_row np.bincount(seg) {g[0]:.2f} ms -> "
        f"cv2.calcHist {g[1]:.2f} ms (same counts: {g[2]}); sample_row depth[depth > 0] + min + max {d[0]:.2f} ms "
        f"-> cv2.countNonZero + masked cv2.minMaxLoc + max {d[1]:.2f} ms (same values: {d[2]})"
    )
    dp = gains["depth_member"]
    print(
        f"  depth of this dense map: depth.pts (the library's) {dp['pts'][0]:.2f} ms, {dp['pts'][1]:.0f} kB "
        f"-> schema 1 depth.png, no row filter (LABEL_PNG_PARAMS) {dp['none'][0]:.2f} ms, {dp['none'][1]:.0f} kB, "
        f"SUB filter (OpenCV's default) {dp['sub'][0]:.2f} ms, {dp['sub'][1]:.0f} kB (all decode to the same map: "
        f"{dp['lossless']})"
    )
    print(f"\ncommand: {common.command_line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
