"""Synthetic Cityscapes (+ Cityscapes-3D) dataset in the native layout, at 256x128 pixels.

The images are 1/8 of the real 2048x1024 (and the intrinsics scaled to match) to keep writing
and converting fast. Layout written under ``out_dir`` (``<id>`` = ``<city>_<seq>_<frame>``)::

    leftImg8bit/<split>/<city>/<id>_leftImg8bit.png        8-bit RGB
    gtFine/<split>/<city>/<id>_gtFine_labelIds.png         8-bit label ids (official table)
    gtFine/<split>/<city>/<id>_gtFine_instanceIds.png      16-bit: id * 1000 + k for vehicles, else the id
    gtFine/<split>/<city>/<id>_gtFine_color.png            RGBA in the official colours
    disparity/<split>/<city>/<id>_disparity.png            16-bit, 256 d + 1, 0 = invalid
    camera/<split>/<city>/<id>_camera.json                 extrinsic (baseline, pose) + intrinsic
    gtBbox3d/<split>/<city>/<id>_gtBbox3d.json             imgWidth/Height, sensor, objects, ignore
    leftImg8bit_sequence/<split>/<city>/<city>_<seq>_<frame - k>_leftImg8bit.png
                                                           k = 0 .. SEQUENCE_FRAMES of the frame

    train: aachen_000000_000019, aachen_000001_000019, bochum_000000_000313 (no disparity and no
           camera json: K only from its gtBbox3d sensor block)
    val:   frankfurt_000000_000294, frankfurt_000001_000019 (no gtBbox3d)

What is consistent with what: each city has one camera (the real calibration of the
cityscapesScripts sample, scaled, slightly varied per city); its camera json is written first
and ``sensor_T_ISO_8855`` derived from the extrinsic as written (``extrinsic_to_sensor_T``).
Each frame is a street in the ISO 8855 vehicle frame: a flat road (z = 0) with dashed lane
markings between sidewalks, building facades on both sides, sky, a few poles, 2-4 vehicles
standing on the road (Cityscapes-3D classes, boxes rounded to the precision of the real files
*before* anything is derived from them) and a far group of cars that is an ``ignore`` region.
Every pixel ray is cast into that scene: the nearest hit gives the label id, the instance id,
the colour and the optical depth Z, from which the disparity ``p = round(256 baseline fx / Z) + 1``
(0 for sky, beyond 120 m, the ego vehicle, the rectification border and a few random holes).
The amodal 2D box is the projected 3D box, ``x = floor(u_min)``, ``x + w = floor(u_max)`` (the
relation of the real sample); the modal box is the extent of the object's visible pixels.
The sequence frame F-k is the same street with every box ``k * STEP_M`` farther ahead, with its
own noise (a separate random stream: the other files are those written before sequences
existed); frame F itself is the labelled image, as in the real package.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from mtl_data.files import write_atomic
from mtl_data.schema import cityscapes_geometry as cg
from mtl_data.synth.objects import place_objects
from mtl_data.synth.registry import register_synth

WIDTH, HEIGHT = 256, 128
SCALE = WIDTH / 2048
EGO_ROWS = 10  # bottom rows showing the ego vehicle's bonnet (label "ego vehicle")
BORDER_COLS = 2  # left columns of the rectification border (label "rectification border")
MAX_STEREO_M = 120.0  # farther hits get no disparity (beyond the stereo matcher's range)
HOLE_FRACTION = 0.02
#: (split, city, seq, frame, has disparity + camera json, has gtBbox3d)
FRAMES = (
    ("train", "aachen", 0, 19, True, True),
    ("train", "aachen", 1, 19, True, True),
    ("train", "bochum", 0, 313, False, True),
    ("val", "frankfurt", 0, 294, True, True),
    ("val", "frankfurt", 1, 19, True, False),
)
CITIES = ("aachen", "bochum", "frankfurt")
#: previous frames in leftImg8bit_sequence/ per FRAMES entry (frankfurt_000001_000019 has none)
SEQUENCE_FRAMES = (3, 3, 2, 3, 0)
STEP_M = 0.6  # ~10 m/s at 17 Hz

# The real camera of the cityscapesScripts gtBbox3d sample (and its quoted camera json).
_REAL_INTRINSIC = {"fx": 2262.52, "fy": 2265.3017905988554, "u0": 1096.98, "v0": 513.137}
_REAL_EXTRINSIC = {"baseline": 0.209313, "pitch": 0.038, "roll": 0.0, "x": 1.7, "y": 0.1, "yaw": -0.0195, "z": 1.22}

#: label ids (official table) used here
LABEL_ID = {
    "ego vehicle": 1,
    "rectification border": 2,
    "road": 7,
    "sidewalk": 8,
    "building": 11,
    "pole": 17,
    "sky": 23,
    "car": 26,
    "truck": 27,
    "bus": 28,
    "motorcycle": 32,
    "bicycle": 33,
}
#: official colours (RGB) of those ids, for the _color.png
LABEL_COLOR = {
    1: (0, 0, 0),
    2: (0, 0, 0),
    7: (128, 64, 128),
    8: (244, 35, 232),
    11: (70, 70, 70),
    17: (153, 153, 153),
    23: (70, 130, 180),
    26: (0, 0, 142),
    27: (0, 0, 70),
    28: (0, 60, 100),
    32: (0, 0, 230),
    33: (119, 11, 32),
}
# vehicle label: (sampling weight, mean [L, W, H] m, gtBbox3d "type", RGB base colours)
VEHICLES = {
    "car": (0.55, (4.3, 1.8, 1.5), "Mid Size Car", ((40, 50, 140), (170, 170, 175), (150, 30, 30), (30, 30, 35))),
    "truck": (0.12, (7.5, 2.5, 3.2), "Truck", ((210, 210, 205), (200, 120, 40))),
    "bus": (0.10, (11.0, 2.55, 3.1), "Bus", ((230, 200, 60), (200, 40, 40))),
    "motorcycle": (0.11, (2.1, 0.8, 1.3), "Motorcycle", ((40, 40, 40), (180, 30, 30))),
    "bicycle": (0.12, (1.75, 0.6, 1.1), "Bicycle", ((30, 90, 60), (90, 90, 100))),
}
ROAD_HALF_M, SIDEWALK_M = 5.0, 3.0


@dataclass(frozen=True)
class _Box:
    """A box in the vehicle frame V, at the precision of the json (what a reader finds)."""

    label: str
    center: np.ndarray  # (3,) metres
    dims: np.ndarray  # (3,) L, W, H
    quat: np.ndarray  # (4,) w, x, y, z
    rgb: tuple[float, float, float]
    annotated: bool  # a gtBbox3d object (vehicles) or not (poles, the far car group)


@dataclass(frozen=True)
class _Street:
    road_y: float  # lateral centre of the road, V
    facade_height: tuple[float, float]  # left, right
    facade_rgb: tuple[tuple[float, float, float], tuple[float, float, float]]
    boxes: list[_Box]


# ---- cameras -------------------------------------------------------------------------------------


def _camera_json(rng: np.random.Generator) -> dict:
    """A city's camera json: the real one, intrinsics scaled to 256x128 and slightly varied."""
    fx = round(_REAL_INTRINSIC["fx"] * SCALE * rng.uniform(0.99, 1.01), 4)
    intrinsic = {
        "fx": fx,
        "fy": round(fx * _REAL_INTRINSIC["fy"] / _REAL_INTRINSIC["fx"], 10),
        "u0": round((_REAL_INTRINSIC["u0"] + 0.5) * SCALE - 0.5 + rng.uniform(-1, 1), 4),
        "v0": round((_REAL_INTRINSIC["v0"] + 0.5) * SCALE - 0.5 + rng.uniform(-1, 1), 4),
    }
    extrinsic = dict(_REAL_EXTRINSIC)
    extrinsic.update(
        baseline=round(0.209313 + rng.uniform(-0.003, 0.003), 6),
        pitch=round(rng.uniform(0.03, 0.05), 4),
        yaw=round(rng.uniform(-0.02, 0.02), 4),
        y=round(0.1 + rng.uniform(-0.03, 0.03), 3),
        z=round(1.22 + rng.uniform(-0.03, 0.03), 3),
    )
    return {"extrinsic": extrinsic, "intrinsic": intrinsic}


@dataclass(frozen=True)
class _Camera:
    K: np.ndarray
    sensor_T: np.ndarray  # (3, 4) V -> C
    baseline: float

    @classmethod
    def parse(cls, doc: dict) -> _Camera:
        """From the json as a reader sees it (so every derived number matches the file)."""
        i, e = doc["intrinsic"], doc["extrinsic"]
        T = cg.extrinsic_to_sensor_T(e["x"], e["y"], e["z"], e["yaw"], e["pitch"], e["roll"])
        return cls(cg.intrinsics(i["fx"], i["fy"], i["u0"], i["v0"]), T, e["baseline"])

    def rays(self) -> tuple[np.ndarray, np.ndarray]:
        """Origin (3,) and (H, W, 3) directions in V of every pixel centre, scaled so the ray
        parameter is the optical depth Z."""
        u, v = np.meshgrid(np.arange(WIDTH, dtype=np.float64), np.arange(HEIGHT, dtype=np.float64))
        X = (u - self.K[0, 2]) / self.K[0, 0]
        Y = (v - self.K[1, 2]) / self.K[1, 1]
        dirs_c = np.stack([np.ones_like(X), -X, -Y], axis=-1)  # C: (Z, -X, -Y) with Z = 1
        R = self.sensor_T[:, :3].T  # C -> V
        return -R @ self.sensor_T[:, 3], dirs_c @ R.T

    def project(self, points_v: np.ndarray) -> np.ndarray:
        """(N, 2) pixel coordinates of V points (the official recipe)."""
        p = cg.camera_to_optical(cg.vehicle_to_camera(points_v, self.sensor_T))
        return np.column_stack(
            [self.K[0, 0] * p[:, 0] / p[:, 2] + self.K[0, 2], self.K[1, 1] * p[:, 1] / p[:, 2] + self.K[1, 2]]
        )


# ---- scene -----------------------------------------------------------------------------------------


def _quat_yaw_tilt(yaw: float, tilt_x: float, tilt_y: float) -> np.ndarray:
    """Normalised [w, x, y, z] of a yaw about z followed by small tilts (as real boxes have)."""

    def q_axis(axis: int, angle: float) -> np.ndarray:
        q = np.zeros(4)
        q[0], q[1 + axis] = np.cos(angle / 2), np.sin(angle / 2)
        return q

    def mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        w1, x1, y1, z1 = a
        w2, x2, y2, z2 = b
        return np.array(
            [
                w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
                w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
                w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
            ]
        )

    q = mul(mul(q_axis(2, yaw), q_axis(1, tilt_y)), q_axis(0, tilt_x))
    return q / np.linalg.norm(q)


def box_corners_v(box: _Box) -> np.ndarray:
    """(8, 3) corners ``c + R(q) (+-L/2, +-W/2, +-H/2)`` in V."""
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], np.float64)
    return box.center + (signs * (0.5 * box.dims)) @ cg.quaternion_to_matrix(box.quat)[0].T


def _amodal_extent(box: _Box, cam: _Camera) -> np.ndarray:
    uv = cam.project(box_corners_v(box))
    return np.concatenate([uv.min(0), uv.max(0)])


def _sample_street(rng: np.random.Generator, cam: _Camera) -> _Street:
    """A street with 2-4 vehicles fully inside the image, a far car group and 2-3 poles."""
    road_y = float(rng.uniform(-1.5, 1.5))

    def place(label: str, dims: np.ndarray, placed: list[_Box]) -> _Box | None:
        x = rng.uniform(8.0, 45.0)
        y = road_y + rng.uniform(-ROAD_HALF_M + 1.2, ROAD_HALF_M - 1.2)
        yaw = rng.normal(0.0, 0.2) + (np.pi if rng.random() < 0.35 else 0.0)
        quat = _quat_yaw_tilt(yaw, *np.radians(rng.uniform(-0.5, 0.5, 2)))
        center = np.round([x, y, 0.5 * dims[2]], 2)
        rgb = VEHICLES[label][3][int(rng.integers(len(VEHICLES[label][3])))]
        box = _Box(label, center, dims, quat, tuple(float(c) * rng.uniform(0.85, 1.1) for c in rgb), True)
        ext = _amodal_extent(box, cam)
        inside = ext[0] >= BORDER_COLS + 1 and ext[2] <= WIDTH - 2 and ext[1] >= 0 and ext[3] <= HEIGHT - EGO_ROWS - 1
        radius = 0.5 * np.hypot(dims[0], dims[1])
        apart = all(np.hypot(*(center[:2] - b.center[:2])) > radius + 0.5 * np.hypot(*b.dims[:2]) + 0.5 for b in placed)
        return box if inside and apart else None

    boxes = place_objects(rng, VEHICLES, jitter=0.05, wanted=int(rng.integers(2, 5)), attempts=400, place=place)
    # a far group of parked cars: drawn as "car" without instances, an ignore region in gtBbox3d
    group = _Box(
        "car",
        np.round([rng.uniform(70.0, 90.0), road_y + rng.choice([-1, 1]) * 3.5, 0.75], 2),
        np.array([9.0, 1.8, 1.5]),
        _quat_yaw_tilt(0.0, 0.0, 0.0),
        (120.0, 120.0, 130.0),
        False,
    )
    poles = []
    for side in (-1, 1):
        for _ in range(int(rng.integers(1, 3))):
            y = road_y + side * (ROAD_HALF_M + rng.uniform(0.4, SIDEWALK_M - 0.4))
            poles.append(
                _Box(
                    "pole",
                    np.round([rng.uniform(10.0, 50.0), y, 2.5], 2),
                    np.array([0.15, 0.15, 5.0]),
                    _quat_yaw_tilt(0.0, 0.0, 0.0),
                    (95.0, 95.0, 100.0),
                    False,
                )
            )
    facade = tuple(tuple(float(c) for c in rng.uniform([110, 90, 70], [190, 170, 150])) for _ in range(2))
    return _Street(road_y, (float(rng.uniform(8, 18)), float(rng.uniform(8, 18))), facade, [*boxes, group, *poles])


# ---- rendering -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Render:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    label: np.ndarray  # (H, W) uint8 label ids
    instance: np.ndarray  # (H, W) uint16 instance ids
    depth: np.ndarray  # (H, W) float64 optical Z, inf = no surface
    hit: np.ndarray  # (H, W) int64: -1 sky, 0 ground, 1/2 facades, 3 + i box i
    silhouette: np.ndarray  # (N, H, W) bool: pixels whose ray hits box i (occluded or not)


def _box_hits(box: _Box, origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ray parameter of each pixel's first hit on the box (inf = none) and the face axis hit."""
    R = cg.quaternion_to_matrix(box.quat)[0]
    o = R.T @ (origin - box.center)
    d = dirs @ R  # (H, W, 3) in box axes
    d = np.where(np.abs(d) < 1e-12, 1e-12, d)
    half = 0.5 * box.dims
    t1, t2 = (-half - o) / d, (half - o) / d
    near = np.minimum(t1, t2)
    t_near, t_far = near.max(-1), np.maximum(t1, t2).min(-1)
    t = np.where((t_near <= t_far) & (t_near > 0), t_near, np.inf)
    return t, near.argmax(-1)


def _render(street: _Street, cam: _Camera, rng: np.random.Generator) -> _Render:
    origin, dirs = cam.rays()
    H, W = HEIGHT, WIDTH
    with np.errstate(divide="ignore", invalid="ignore"):
        t_ground = np.where(dirs[..., 2] < 0, -origin[2] / dirs[..., 2], np.inf)
        facade_y = (street.road_y + ROAD_HALF_M + SIDEWALK_M, street.road_y - ROAD_HALF_M - SIDEWALK_M)
        t_facade = []
        for y_plane, height in zip(facade_y, street.facade_height):
            t = (y_plane - origin[1]) / dirs[..., 1]
            z = origin[2] + t * dirs[..., 2]
            t_facade.append(np.where((t > 0) & (z >= 0) & (z <= height), t, np.inf))
    box_t, box_axis = zip(*(_box_hits(b, origin, dirs) for b in street.boxes)) if street.boxes else ((), ())
    t_all = np.stack([t_ground, *t_facade, *box_t])  # (3 + N, H, W)
    hit = t_all.argmin(0)
    depth = np.take_along_axis(t_all, hit[None], 0)[0]
    hit = np.where(np.isinf(depth), -1, hit)
    point = origin + np.where(np.isinf(depth), 0.0, depth)[..., None] * dirs  # V coordinates of the hit

    label = np.full((H, W), LABEL_ID["sky"], np.uint8)
    instance = np.zeros((H, W), np.uint16)
    rgb = np.zeros((H, W, 3), np.float32)
    # sky: pale at the horizon, bluer upwards
    up = np.clip(dirs[..., 2] * 4.0, 0.0, 1.0)[..., None].astype(np.float32)
    sky_rgb = (1 - up) * np.array([200, 215, 230], np.float32) + up * np.array([95, 140, 200], np.float32)
    rgb[:] = sky_rgb
    # ground: road with dashed markings, sidewalks
    ground = hit == 0
    lateral = np.abs(point[..., 1] - street.road_y)
    road = ground & (lateral < ROAD_HALF_M)
    label[ground] = LABEL_ID["sidewalk"]
    label[road] = LABEL_ID["road"]
    rgb[ground] = (150, 146, 140)
    rgb[road] = (88, 88, 92)
    marking = road & (lateral < 0.08) & (np.mod(point[..., 0], 9.0) < 3.0)
    rgb[marking] = (225, 225, 220)
    # facades with rows of windows
    for k in (1, 2):
        facade = hit == k
        label[facade] = LABEL_ID["building"]
        window = (np.mod(point[..., 2], 3.0) > 1.2) & (np.mod(point[..., 0], 4.0) > 2.5)
        rgb[facade] = street.facade_rgb[k - 1]
        rgb[facade & window] = (60, 70, 85)
    # boxes: shaded by the face hit
    counters: dict[int, int] = {}
    shade = np.array([0.85, 0.7, 1.1], np.float32)  # face across length, width, top
    for i, box in enumerate(street.boxes):
        mine = hit == 3 + i
        lid = LABEL_ID[box.label]
        label[mine] = lid
        if box.annotated:
            instance[mine] = lid * 1000 + counters.get(lid, 0)
            counters[lid] = counters.get(lid, 0) + 1
        else:
            instance[mine] = lid  # no instance: a pole, or a group of cars (crowd)
        rgb[mine] = np.array(box.rgb, np.float32) * shade[box_axis[i][mine]][:, None]
    instance = np.where(instance == 0, label, instance).astype(np.uint16)
    # distance haze, texture and sensor noise
    haze = np.exp(-np.where(np.isinf(depth), 0.0, depth) / 180.0)[..., None].astype(np.float32)
    surface = (hit >= 0)[..., None]
    rgb = np.where(surface, haze * rgb + (1 - haze) * sky_rgb, rgb)
    rgb += cv2.resize(rng.normal(0.0, 6.0, (H // 8, W // 8)), (W, H))[..., None].astype(np.float32)
    rgb += rng.normal(0.0, 3.0, rgb.shape).astype(np.float32)
    # the ego vehicle's bonnet and the rectification border are drawn over the scene
    label[-EGO_ROWS:] = instance[-EGO_ROWS:] = LABEL_ID["ego vehicle"]
    rgb[-EGO_ROWS:] = (35, 35, 38)
    label[:, :BORDER_COLS] = instance[:, :BORDER_COLS] = LABEL_ID["rectification border"]
    rgb[:, :BORDER_COLS] = 0
    silhouette = np.stack([np.isfinite(t) for t in box_t]) if box_t else np.zeros((0, H, W), bool)
    image = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    return _Render(image, label, instance, depth, hit, silhouette)


def _disparity(render: _Render, cam: _Camera, rng: np.random.Generator) -> np.ndarray:
    """uint16 disparity PNG values of the rendered depth: ``round(256 B fx / Z) + 1``, 0 = invalid."""
    z = render.depth
    valid = np.isfinite(z) & (z <= MAX_STEREO_M) & (render.label != LABEL_ID["ego vehicle"])
    valid &= render.label != LABEL_ID["rectification border"]
    valid &= rng.random(z.shape) >= HOLE_FRACTION
    out = np.zeros(z.shape, np.uint16)
    out[valid] = np.rint(256.0 * cam.baseline * cam.K[0, 0] / z[valid]).astype(np.uint16) + 1
    return out


def _gtbbox3d(street: _Street, render: _Render, cam: _Camera, camera_doc: dict) -> dict:
    """The gtBbox3d json of a frame: sensor block, visible annotated objects, the ignore region."""
    T = cam.sensor_T
    i = camera_doc["intrinsic"]
    doc = {
        "imgWidth": WIDTH,
        "imgHeight": HEIGHT,
        "sensor": {
            "sensor_T_ISO_8855": T.tolist(),
            "fx": i["fx"],
            "fy": i["fy"],
            "u0": i["u0"],
            "v0": i["v0"],
            "baseline": camera_doc["extrinsic"]["baseline"],
        },
        "objects": [],
        "ignore": [],
    }
    for k, box in enumerate(street.boxes):
        ext = _amodal_extent(box, cam)
        x, y, x2, y2 = (int(np.floor(v)) for v in ext)
        x, y = max(x, 0), max(y, 0)
        x2, y2 = min(x2, WIDTH - 1), min(y2, HEIGHT - 1)
        if box.label == "pole":
            continue
        if not box.annotated:
            if x2 <= x or y2 <= y:
                continue  # the group is out of view
            doc["ignore"].append({"2d": [x, y, x2 - x, y2 - y], "label": "car", "instanceId": LABEL_ID["car"]})
            continue
        visible = render.hit == 3 + k
        rows, cols = np.nonzero(visible)
        modal = [int(cols.min()), int(rows.min()), int(cols.max() - cols.min()), int(rows.max() - rows.min())]
        occlusion = round(1.0 - visible.sum() / render.silhouette[k].sum(), 2)
        lid = LABEL_ID[box.label]
        instance_id = int(np.bincount(render.instance[visible]).argmax())
        assert instance_id // 1000 == lid
        doc["objects"].append(
            {
                "2d": {"modal": modal, "amodal": [x, y, x2 - x, y2 - y]},
                "3d": {
                    "center": box.center.tolist(),
                    "dimensions": box.dims.tolist(),
                    "rotation": box.quat.tolist(),
                    "type": VEHICLES[box.label][2],
                    "format": "CRS_ISO8855",
                },
                "occlusion": occlusion,
                "truncation": 0.0,
                "instanceId": instance_id,
                "label": box.label,
                "score": 1.0,
            }
        )
    return doc


def _well_visible(street: _Street, render: _Render) -> bool:
    """Every annotated vehicle shows at least a quarter of itself and 12 pixels."""
    for k, box in enumerate(street.boxes):
        if box.annotated:
            visible = int(np.count_nonzero(render.hit == 3 + k))
            if visible < 12 or visible < 0.25 * render.silhouette[k].sum():
                return False
    return True


# ---- writing -----------------------------------------------------------------------------------------


def _png(array: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", array)
    assert ok
    return buf.tobytes()


def _json_bytes(doc: dict) -> bytes:
    return (json.dumps(doc, indent=4) + "\n").encode()


@register_synth("cityscapes")
def synth_cityscapes(out_dir: Path, *, seed: int = 0) -> None:
    """Write a tiny Cityscapes dataset (3 train frames in 2 cities, 2 val frames) under ``out_dir``.

    Args:
        out_dir: root; ``leftImg8bit/``, ``gtFine/``, ``disparity/``, ``camera/`` and ``gtBbox3d/``
            are created in it.
        seed: the same seed gives byte-identical files.
    """
    out_dir = Path(out_dir)
    cameras = {}
    for k, city in enumerate(CITIES):
        doc = _camera_json(np.random.default_rng([seed, 1000 + k]))
        cameras[city] = (json.loads(_json_bytes(doc)), _json_bytes(doc))  # parse back what is written
    palette = np.zeros((256, 4), np.uint8)
    for lid, (r, g, b) in LABEL_COLOR.items():
        palette[lid] = (b, g, r, 255)  # BGRA for OpenCV
    for index, (split, city, seq, frame, stereo, boxes) in enumerate(FRAMES):
        rng = np.random.default_rng([seed, index])  # (seed, index): seeds never share frames
        camera_doc, camera_bytes = cameras[city]
        cam = _Camera.parse(camera_doc)
        for _ in range(100):
            street = _sample_street(rng, cam)
            render = _render(street, cam, rng)
            if _well_visible(street, render):
                break
        else:  # pragma: no cover - a street is found within a few tries for any seed
            raise RuntimeError(f"seed {seed}: no street with visible vehicles for frame {index}")
        frame_id = f"{city}_{seq:06d}_{frame:06d}"

        where = (split, city, frame_id)

        def put(package: str, suffix: str, data: bytes, where: tuple[str, str, str] = where) -> None:
            write_atomic(out_dir / package / where[0] / where[1] / f"{where[2]}{suffix}", data)

        put("leftImg8bit", "_leftImg8bit.png", _png(cv2.cvtColor(render.image, cv2.COLOR_RGB2BGR)))
        put("gtFine", "_gtFine_labelIds.png", _png(render.label))
        put("gtFine", "_gtFine_instanceIds.png", _png(render.instance))
        put("gtFine", "_gtFine_color.png", _png(palette[render.label]))
        if stereo:
            put("camera", "_camera.json", camera_bytes)
            put("disparity", "_disparity.png", _png(_disparity(render, cam, rng)))
        if boxes:
            put("gtBbox3d", "_gtBbox3d.json", _json_bytes(_gtbbox3d(street, render, cam, camera_doc)))
        for k in range(SEQUENCE_FRAMES[index] + 1) if SEQUENCE_FRAMES[index] else ():
            moved = [dataclasses.replace(b, center=b.center + [k * STEP_M, 0.0, 0.0]) for b in street.boxes]
            image = (
                render.image
                if k == 0
                else _render(
                    dataclasses.replace(street, boxes=moved), cam, np.random.default_rng([seed, index, 1000 + k])
                ).image
            )
            name = f"{city}_{seq:06d}_{frame - k:06d}"
            put(
                "leftImg8bit_sequence",
                "_leftImg8bit.png",
                _png(cv2.cvtColor(image, cv2.COLOR_RGB2BGR)),
                (split, city, name),
            )
