"""Synthetic TuSimple lane-detection dataset in the exact native layout.

Layout written under ``out_dir``::

    train_set/clips/0313-1/<n>/1.jpg .. 20.jpg        3 clips, n a multiple of 20 (like 6040)
    train_set/clips/0601/<ns timestamp>/1.jpg .. 20.jpg  3 clips, 19-digit names
    train_set/label_data_0313.json    JSON lines, 48 h_samples 240..710, keys raw_file, lanes,
                                      h_samples, classes (the order and extra key of the copies
                                      that carry lane classes)
    train_set/label_data_0601.json    JSON lines, 56 h_samples 160..710, keys lanes, h_samples,
                                      raw_file (TuSimple's own order)
    test_set/clips/0530/<ns timestamp>_0/1.jpg .. 20.jpg   2 clips
    test_label.json                   the test labels (56 rows), beside test_set/ as downloaded

``20.jpg`` (the labelled frame, ``raw_file``) is 1280x720 like TuSimple's, and so are the frames
``--prev-frames`` can read (``17.jpg`` .. ``19.jpg``, t-3 .. t-1); frames 1..16 of each clip are
written at 1/8 size (160x90), since nothing reads them (full size they would make the dataset
~8x larger). Every frame shows the same road earlier in the clip (the dashes move). The full-size
frames 17..19 have their own noise (a separate random stream), so every other file is what it
was before they were written at full size.

What is consistent with what: each clip is a flat road seen by a pinhole camera (focal length
``FOCAL_PX``, ``CAMERA_HEIGHT_M`` above the road, horizon row and vanishing column per clip)
with 2-5 lane markings at fixed lateral offsets on a road of constant curvature. A marking at
lateral offset X is at column ``u(v) = cx + X (v - v0) / h + c f^2 h / (v - v0)`` on row v; the
label x on each ``h_samples`` row is ``round(u(v))`` and the image paints the marking
(0.15 m wide, solid or 4 m dashes every 12 m) centred on the same curve, up to the lane's
visible distance. Label x within ``OUTSIDE_PX`` of the image are written even when outside it
(negative or >= 1280); farther ones, and rows beyond the visible distance, are -2. Some lanes
pass behind a dark vehicle: the rows it covers are -2 inside the lane (a gap) and the image
shows the vehicle, not the marking. Lanes are listed in random order, as in TuSimple.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from mtl_data.files import write_atomic
from mtl_data.synth.registry import register_synth

WIDTH, HEIGHT = 1280, 720
SMALL = 8  # frames 1..FULL_FROM - 1 are written at 1/SMALL of the size
FRAMES_PER_CLIP = 20
FULL_FROM = 17  # frames 17..20 at full size: t-3 .. t of the labelled 20.jpg
FOCAL_PX = 1000.0
CAMERA_HEIGHT_M = 1.6
LANE_WIDTH_M = 3.7
MARKING_WIDTH_M = 0.15
DASH_M, DASH_PERIOD_M = 4.0, 12.0
SPEED_MPS = 25.0  # 20 frames = 1 s
OUTSIDE_PX = 60  # label x up to this far outside the image are kept as numbers
JPEG_QUALITY = 90
#: TuSimple's two h_samples grids: label_data_0313 and label_data_0531/0601/test.
GRID_48 = list(range(240, 720, 10))
GRID_56 = list(range(160, 720, 10))
#: (split folder, label file, clip folder, clip count, grid, key order)
GROUPS = (
    ("train_set", "label_data_0313.json", "0313-1", 3, GRID_48, ("raw_file", "lanes", "h_samples", "classes")),
    ("train_set", "label_data_0601.json", "0601", 3, GRID_56, ("lanes", "h_samples", "raw_file")),
    ("test_set", "test_label.json", "0530", 2, GRID_56, ("lanes", "h_samples", "raw_file")),
)
_SKY_BGR = (np.array([235, 205, 180], np.float32), np.array([200, 150, 110], np.float32))
_ASPHALT_BGR = np.array([95, 95, 100], np.float32)
_VERGE_BGR = np.array([70, 115, 95], np.float32)
_WHITE_BGR = np.array([235, 235, 235], np.float32)
_YELLOW_BGR = np.array([60, 200, 225], np.float32)
_VEHICLE_BGR = np.array([40, 38, 45], np.float32)


@dataclass(frozen=True)
class _Lane:
    """One marking: lateral offset (m, right positive), visible distance (m), paint."""

    offset_m: float
    max_dist_m: float
    dashed: bool
    yellow: bool


@dataclass(frozen=True)
class _Road:
    """One clip's camera and road (all numbers in px or metres at full size).

    Attributes:
        cx: column of the vanishing point of the straight part.
        v0: horizon row.
        curvature: c in ``X(Z) = X0 + c Z^2`` (1/m).
        lanes: the markings, left to right.
        vehicle: (lane index, near distance m, far distance m) of the vehicle hiding that lane's
            marking, or None.
    """

    cx: float
    v0: float
    curvature: float
    lanes: tuple[_Lane, ...]
    vehicle: tuple[int, float, float] | None


def lane_column(road: _Road, offset_m: float, v: np.ndarray) -> np.ndarray:
    """Column (px) of the marking at lateral offset ``offset_m`` on rows ``v`` (> horizon)."""
    dv = v - road.v0
    return road.cx + offset_m * dv / CAMERA_HEIGHT_M + road.curvature * FOCAL_PX**2 * CAMERA_HEIGHT_M / dv


def row_distance(road: _Road, v: np.ndarray) -> np.ndarray:
    """Distance ahead (m) of the road seen on rows ``v`` (> horizon)."""
    return FOCAL_PX * CAMERA_HEIGHT_M / (v - road.v0)


def _sample_road(rng: np.random.Generator) -> _Road:
    n_lanes = int(rng.choice([2, 3, 4, 4, 5]))
    ego = rng.uniform(-0.6, 0.6)  # camera offset from the ego lane centre
    # Markings at k half lane widths from the ego lane centre: the ego pair (k = -1, 1) always,
    # then the next pair out (k = -3, 3), then the one after (k = -5, 5).
    extra = [*rng.permutation([-3, 3]).tolist(), *rng.permutation([-5, 5]).tolist()]
    ks = sorted([-1, 1, *extra[: n_lanes - 2]])
    lanes = []
    for k in ks:
        outer = k in (min(ks), max(ks))
        lanes.append(
            _Lane(
                offset_m=round(k * LANE_WIDTH_M / 2 - ego, 3),
                max_dist_m=float(rng.uniform(45.0, 80.0)) if abs(k) < 5 else float(rng.uniform(20, 35)),
                dashed=not outer,
                yellow=outer and k < 0 and bool(rng.random() < 0.5),
            )
        )
    road = _Road(
        cx=float(rng.uniform(560.0, 720.0)),
        v0=float(rng.uniform(238.0, 262.0)),
        curvature=float(rng.uniform(-6e-4, 6e-4)),
        lanes=tuple(lanes),
        vehicle=None,
    )
    # A vehicle on one of the inner markings, 9-16 m ahead: its rows become a gap in that lane.
    if rng.random() < 0.75:
        inner = [i for i, k in enumerate(ks) if k in (-1, 1)]
        near = float(rng.uniform(9.0, 13.0))
        road = _Road(road.cx, road.v0, road.curvature, road.lanes, (int(rng.choice(inner)), near, near + 3.5))
    return road


def _label_x(road: _Road, index: int, grid: list[int]) -> list[int]:
    """The label row of lane ``index``: round(u) on visible rows, -2 elsewhere and behind the vehicle."""
    lane = road.lanes[index]
    out = []
    for row in grid:
        v = float(row)
        if v - road.v0 <= 1.0:
            out.append(-2)
            continue
        u, dist = float(lane_column(road, lane.offset_m, v)), float(row_distance(road, v))
        hidden = road.vehicle is not None and road.vehicle[0] == index and road.vehicle[1] <= dist <= road.vehicle[2]
        visible = dist <= lane.max_dist_m and -OUTSIDE_PX <= u < WIDTH + OUTSIDE_PX and not hidden
        out.append(int(round(u)) if visible else -2)
    return out


def _render(road: _Road, position_m: float, scale: int, rng: np.random.Generator) -> np.ndarray:
    """BGR uint8 image at 1/``scale`` size: sky, road, verge, markings, the vehicle, noise.

    ``position_m`` is how far the camera is along the road relative to frame 20 (the dashes
    are fixed on the road; the vehicle drives at the camera's speed). Pixels are sampled at the
    full-size coordinates of their centres, so the small frames show the same geometry.
    """
    h, w = HEIGHT // scale, WIDTH // scale
    v = (np.arange(h) + 0.5) * scale - 0.5  # (h,) full-size rows of the pixel centres
    u = ((np.arange(w) + 0.5) * scale - 0.5).astype(np.float32)  # (w,)
    sky = np.clip((road.v0 - v) / road.v0, 0.0, 1.0).astype(np.float32)[:, None, None]
    image = np.broadcast_to((1 - sky) * _SKY_BGR[0] + sky * _SKY_BGR[1], (h, w, 3)).copy()  # (h, w, 3)
    g0 = int(np.argmax(v - road.v0 > 1.0))  # first row of ground (rows below the horizon)
    dv = v[g0:] - road.v0  # (hg,)
    dist = row_distance(road, v[g0:]).astype(np.float32)[:, None]  # (hg, 1) metres ahead
    # lateral position (m) of each ground pixel relative to the road's curve: (hg, w)
    centre = (road.cx + road.curvature * FOCAL_PX**2 * CAMERA_HEIGHT_M / dv).astype(np.float32)[:, None]
    lateral = (u[None, :] - centre) * (CAMERA_HEIGHT_M / dv).astype(np.float32)[:, None]
    left, right = road.lanes[0].offset_m - 0.8, road.lanes[-1].offset_m + 0.8
    colour = np.where(((lateral > left) & (lateral < right))[..., None], _ASPHALT_BGR, _VERGE_BGR)  # (hg, w, 3)
    texture = cv2.resize(rng.normal(0.0, 8.0, (max(h // 10, 1), max(w // 10, 1))).astype(np.float32), (w, h))
    colour += texture[g0:, :, None]
    for lane in road.lanes:
        paint = (np.abs(lateral - lane.offset_m) < MARKING_WIDTH_M / 2) & (dist <= lane.max_dist_m)
        if lane.dashed:
            paint &= np.mod(dist + position_m, DASH_PERIOD_M) < DASH_M
        colour[paint] = _YELLOW_BGR if lane.yellow else _WHITE_BGR
    haze = np.exp(-dist / 120.0)[..., None]  # (hg, 1, 1): far ground fades into the sky colour
    image[g0:] = haze * colour + (1 - haze) * _SKY_BGR[0]
    if road.vehicle is not None:
        image = _draw_vehicle(image, road, scale)
    image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(3.0)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _draw_vehicle(image: np.ndarray, road: _Road, scale: int) -> np.ndarray:
    """A dark box covering the lane's marking from the vehicle's near to far distance."""
    index, near, far = road.vehicle
    lane = road.lanes[index]
    v_near = road.v0 + FOCAL_PX * CAMERA_HEIGHT_M / near
    v_far = road.v0 + FOCAL_PX * CAMERA_HEIGHT_M / far
    rows = np.linspace(v_far, v_near, 16)
    cols = lane_column(road, lane.offset_m, rows)
    half = 1.0 * (v_near - road.v0) / CAMERA_HEIGHT_M  # 1 m either side of the marking, at the near end
    top = v_far - 0.6 * (v_near - v_far)  # the body rises above its far end
    x0, x1 = cols.min() - half, cols.max() + half
    # whole pixels containing the box, so the covered rows are fully dark at any scale
    r0, r1 = int(np.floor((top - 5) / scale)), int(np.ceil((v_near + 5) / scale))
    c0, c1 = int(np.floor(x0 / scale)), int(np.ceil(x1 / scale))
    image[max(r0, 0) : r1, max(c0, 0) : c1] = _VEHICLE_BGR
    return image


def _jpeg(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    assert ok
    return buf.tobytes()


def _clip_names(rng: np.random.Generator, folder: str, count: int) -> list[str]:
    if folder.startswith("0313"):  # numbered clip folders, multiples of 20 as in TuSimple
        return [str(n) for n in sorted(rng.choice(np.arange(20, 60000, 20), count, replace=False).tolist())]
    start = 1492626000000000000 + int(rng.integers(0, 10**15))  # ns timestamps, clips seconds apart
    stamps = start + np.cumsum(rng.integers(4 * 10**9, 9 * 10**9, count))
    suffix = "_0" if folder == "0530" else ""  # test clip folders carry a suffix
    return [f"{int(s)}{suffix}" for s in stamps]


@register_synth("tusimple")
def synth_tusimple(out_dir: Path, *, seed: int = 0) -> None:
    """Write a tiny TuSimple dataset (6 labelled training clips, 2 test clips) under ``out_dir``.

    Args:
        out_dir: root; ``train_set/``, ``test_set/`` and ``test_label.json`` are created in it.
        seed: the same seed gives byte-identical files.
    """
    out_dir = Path(out_dir)
    for group_no, (split, label_name, folder, count, grid, keys) in enumerate(GROUPS):
        names = _clip_names(np.random.default_rng([seed, group_no]), folder, count)
        lines = []
        for clip_no, name in enumerate(names):
            # (seed, group, clip) as entropy: seeds never share clips, unlike seed + index.
            rng = np.random.default_rng([seed, group_no, clip_no])
            road = _sample_road(rng)
            clip_dir = out_dir / split / "clips" / folder / name
            for frame in range(1, FRAMES_PER_CLIP + 1):
                position = -SPEED_MPS * (FRAMES_PER_CLIP - frame) / FRAMES_PER_CLIP
                scale = 1 if frame == FRAMES_PER_CLIP else SMALL
                image = _render(road, position, scale, rng)  # also for 17..19: the stream stays as it was
                if FULL_FROM <= frame < FRAMES_PER_CLIP:
                    image = _render(road, position, 1, np.random.default_rng([seed, group_no, clip_no, frame]))
                write_atomic(clip_dir / f"{frame}.jpg", _jpeg(image))
            lanes = [_label_x(road, i, grid) for i in range(len(road.lanes))]
            order = rng.permutation(len(lanes))  # TuSimple lists lanes in no particular order
            doc = {
                "raw_file": f"clips/{folder}/{name}/20.jpg",
                "lanes": [lanes[i] for i in order],
                "h_samples": grid,
                "classes": [2 if road.lanes[i].dashed else 1 for i in order],
            }
            lines.append(json.dumps({k: doc[k] for k in keys}))
        label_path = out_dir / (label_name if split == "test_set" else f"{split}/{label_name}")
        write_atomic(label_path, ("\n".join(lines) + "\n").encode())
