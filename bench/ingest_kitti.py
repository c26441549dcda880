"""KITTI ingest throughput against its codec floor, measured in the same run.

What is compared, and why: design.md section 7 sets the ingest target as ">= 80% of the codec
floor of the work done per frame (image decode + encode, label decode), per worker" and
"near-linear scaling with workers". The floor is what no ingest can beat on this machine: read
the PNG, decode it, convert RGB->BGR and encode a quality-95 JPEG, read the label, calib and
velodyne files. A second floor adds the ``depth.pts`` encode of the sparse depth map
(``encode_depth_points``, schema 2), which the ingest must also produce. Both are timed here,
single process, on the same frames as the ingest.

The frames are the two real KITTI fixture frames (1224x370 and 1242x375 PNGs, ~115k-point
scans) replicated under new ids, so sizes are real. Every figure is the best of R repeats (the
machine is shared and noisy). The script prints results and never asserts on speed.

Every ratio is on CPU time (``bench/common.py``: this process's threads and its reaped worker
processes; numpy's OpenBLAS may run threads of its own, the header shows
``OPENBLAS_NUM_THREADS``): ``floor / ingest`` is the share of the floor's speed the ingest
reaches. Wall times are printed for information. Floors and ingest are interleaved repeat by
repeat. Besides the ratios it prints what explains them: a per-stage CPU breakdown of one
worker's time, the minor page faults per frame, and the scaling over workers (wall speed-up for
information, CPU efficiency = inline CPU per frame / CPU per frame with the pool).

Run: ``make bench`` or ``.venv/bin/python bench/ingest_kitti.py --frames 60 --repeats 3``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/common.py, shared with ingest_a2d2.py
import common  # noqa: E402
from common import stage_breakdown  # noqa: E402

from mtl_data.ingest.engine import IngestOptions  # noqa: E402
from mtl_data.ingest.kitti import KittiConverter, parse_kitti_label, read_velodyne  # noqa: E402
from mtl_data.procs import tune_worker_process  # noqa: E402
from mtl_data.schema import geometry as geo  # noqa: E402
from mtl_data.schema.kitti_calib import parse_kitti_calib, split_projection, velo_to_optical  # noqa: E402
from mtl_data.shards.codec import decode_image, encode_image  # noqa: E402
from mtl_data.shards.depthpoints import encode_depth_points  # noqa: E402

ROLES = (("image_2", ".png"), ("label_2", ".txt"), ("calib", ".txt"), ("velodyne", ".bin"))


def build_raw(fixtures: Path, root: Path, n: int) -> Path:
    """Replicate fixture frames 000000/000001 as ids 000000..n-1 under ``root/training``.

    Returns:
        The raw KITTI root (the folder holding ``training/``).
    """
    src = fixtures / "kitti" / "object" / "training"
    missing = [f"{src}/{d}/00000{i}{e}" for d, e in ROLES for i in (0, 1) if not (src / d / f"00000{i}{e}").is_file()]
    if missing:
        sys.exit(
            f"error: KITTI fixtures missing: {missing[0]} ({len(missing)} of 8 files); pass "
            f"--fixtures PATH or set MTL_FIXTURES to the folder holding kitti/object/training/"
        )
    for folder, ext in ROLES:
        (root / "training" / folder).mkdir(parents=True)
        for i in range(n):
            common.link(src / folder / f"00000{i % 2}{ext}", root / "training" / folder / f"{i:06d}{ext}")
    return root


def codec_floor(frames, depth16: dict[int, np.ndarray] | None) -> None:
    """The floor: read + decode PNG, RGB->BGR + JPEG q95, read label/calib/velodyne [+ depth.pts]."""
    for f in frames:
        rgb = cv2.imdecode(np.frombuffer(f.paths["image"].read_bytes(), np.uint8), cv2.IMREAD_COLOR_RGB)
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
        f.paths["label"].read_text(), f.paths["calib"].read_text(), f.paths["velodyne"].read_bytes()
        if depth16 is not None:
            # the encode the library writes depth.pts with: the same bytes as the ingest's
            encode_depth_points(depth16[int(f.id) % 2])  # frame i is fixture i % 2


def kitti_parts(conv: KittiConverter, opts: IngestOptions):
    """Pass 2 of `common.stage_breakdown`: the parts of ``convert`` and ``encode_sample``."""

    def parts(tick, f) -> None:
        p = f.paths
        img = tick("  convert: read + decode_image (PNG)", lambda: decode_image(p["image"].read_bytes()))
        calib = tick(
            "  convert: read + parse calib, label",
            lambda: (parse_kitti_calib(p["calib"].read_text()), parse_kitti_label(p["label"].read_text()))[0],
        )
        pts = tick("  convert: read_velodyne", read_velodyne, p["velodyne"])
        K, _ = split_projection(calib.P2)
        depth = tick(
            "  convert: project_to_depth (scan -> depth)",
            geo.project_to_depth,
            pts,
            K @ velo_to_optical(calib)[:3],
            img.shape[:2],
        )
        tick("  encode: encode_image (RGB->BGR, JPEG)", encode_image, img, opts.image_format, opts.jpeg_quality)
        tick(  # as encode_sample writes it
            "  encode: depth rint/uint16 + depth.pts",
            lambda: encode_depth_points(common.depth_u16(depth)),
        )

    return parts


def main() -> int:
    ap = common.parser(__doc__, frames=60, scale_factor=5)
    args = ap.parse_args()
    n, r, n_scale = args.frames, args.repeats, args.scale_frames or 5 * args.frames

    # The process settings `mtl-data ingest` uses (one OpenCV thread, glibc buffers kept): the
    # floor and the inline ingest both run under them, so the comparison stays like for like.
    tune_worker_process()
    with tempfile.TemporaryDirectory(prefix="mtl-bench-") as tmp:
        tmp = Path(tmp)
        root = build_raw(args.fixtures, tmp / "raw", max(n, n_scale))
        conv = KittiConverter(root)
        frames = conv.frames()[:n]
        opts = IngestOptions(limit=n, shard_size=args.shard_size, overwrite=True, workers=1)
        # Depth maps for floor 2: converted once per distinct frame, outside the timed region.
        depth16 = {int(f.id): common.depth_u16(conv.convert(f).depth) for f in frames[:2]}
        m = common.floors_and_ingest(
            r,
            {
                "floor 1: PNG dec + JPEG q95 enc + file reads": lambda: codec_floor(frames, None),
                "floor 2: floor 1 + depth.pts encode": lambda: codec_floor(frames, depth16),
            },
            lambda: KittiConverter(root),
            tmp,
            opts,
        )
        stages = stage_breakdown(conv, opts, frames, r, kitti_parts(conv, opts))
        scale = common.scaling(lambda: KittiConverter(root), tmp, n_scale, args)

    w = 46
    common.print_header(f"KITTI ingest vs codec floor: {n} frames, best of {r}", w)
    common.print_floor_table(m.floors, m.ingest, n, w)
    common.print_ingest_usage(m.best, n)
    common.print_scaling(scale, n_scale)
    common.print_stages(stages, m.best, n, common.floors_note(m.floors, n), 42)
    print(f"\ncommand: {common.command_line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
