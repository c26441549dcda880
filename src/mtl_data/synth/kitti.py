"""Synthetic KITTI object-detection dataset in the exact native layout.

Layout written under ``out_dir``::

    training/image_2/000000.png .. 000005.png   8-bit RGB PNG, size varies per frame (1242x375, ...)
    training/label_2/000000.txt .. 000005.txt   15 space-separated fields per object + one DontCare
    training/calib/000000.txt   .. 000005.txt   P0..P3, R0_rect, Tr_velo_to_cam, Tr_imu_to_velo, "\\n\\n"
    training/velodyne/000000.bin .. 000005.bin  little-endian float32 N x 4 (x, y, z, reflectance)
    testing/{image_2,calib,velodyne}/000000.* .. 000001.*   same, no label_2
    {training,testing}/prev_2/<id>_01.png ...    the frames before some frames ("3 temporally
                                                 preceding frames" package), PREV_FRAMES says which

What is consistent with what: each frame is one small 3D scene in rectified camera-0
coordinates (a flat ground plane ``CAMERA_HEIGHT_M`` below the camera, y down, and 2-5
non-overlapping boxes standing on it). The label's 3D fields are that scene, rounded to the
2 decimals a label file holds *before* anything is derived from them; the 2D boxes are the
projected 3D boxes (with the frame's own P2) clipped to the image; the image shows the same
ground (horizon at ``cy``) and box faces; the point cloud is a simulated 64-beam scan of the
same ground and boxes, expressed in the velodyne frame through the frame's own calibration.
The calibration text is written first and parsed back, so every derived quantity uses exactly
the numbers a reader will find in the file. A previous frame t-k is the same scene with every
object ``k * EGO_STEP_M`` farther ahead (the camera drove towards them), rendered with the
frame's calibration and its own noise (a separate random stream: the other files are those
written before previous frames existed).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from mtl_data.files import write_atomic
from mtl_data.schema.geometry import (
    box3d_corners,
    box_extent_in_image,
    project,
    transform_points,
    yaw_to_rotation,
)
from mtl_data.schema.kitti_calib import (
    KittiCalib,
    kitti_label_to_box3d,
    parse_kitti_calib,
    split_projection,
    velo_to_rect,
)
from mtl_data.synth.objects import place_objects
from mtl_data.synth.registry import register_synth

N_TRAIN, N_TEST = 6, 2
#: which ``prev_2/<id>_0k.png`` files exist, by frame index (training 0..5, then testing 0..1):
#: all three, t-1 only, none, t-1 and t-3 (a gap: only t-1 counts), ...
PREV_FRAMES = ((1, 2, 3), (1,), (), (1, 3), (1, 2, 3), (1, 2), (1, 2, 3), ())
EGO_STEP_M = 1.0  # 10 m/s at KITTI's 10 Hz
#: (width, height) of real KITTI images; frames cycle through them so sizes always vary.
IMAGE_SIZES = ((1242, 375), (1224, 370), (1238, 374), (1241, 376), (1226, 370))
CAMERA_HEIGHT_M = 1.65  # rectified camera 0 above the ground; the ground is the plane y = 1.65
MAX_RANGE_M = 80.0
BEAM_ELEVATIONS_DEG = np.linspace(-24.8, 2.0, 64)  # HDL-64E vertical field of view
AZIMUTHS_DEG = np.arange(0.0, 360.0, 0.35)

# Real calibration of fixture training/calib/000000.txt (hard-coded: no fixture read at run time).
_REAL_K = np.array([[7.070493e02, 0.0, 6.040814e02], [0.0, 7.070493e02, 1.805066e02], [0.0, 0.0, 1.0]])
_REAL_P_LAST_COLUMN = {  # P_i[:, 3] = K @ t_i; t_i is the physical offset of camera i, kept per frame
    "P0": [0.0, 0.0, 0.0],
    "P1": [-3.797842e02, 0.0, 0.0],
    "P2": [4.575831e01, -3.454157e-01, 4.981016e-03],
    "P3": [-3.341081e02, 2.330660e00, 3.201153e-03],
}
_REAL_R0_RECT = [
    9.999128e-01,
    1.009263e-02,
    -8.511932e-03,
    -1.012729e-02,
    9.999406e-01,
    -4.037671e-03,
    8.470675e-03,
    4.123522e-03,
    9.999556e-01,
]
_REAL_TR_VELO_TO_CAM = [
    6.927964e-03,
    -9.999722e-01,
    -2.757829e-03,
    -2.457729e-02,
    -1.162982e-03,
    2.749836e-03,
    -9.999955e-01,
    -6.127237e-02,
    9.999753e-01,
    6.931141e-03,
    -1.143899e-03,
    -3.321029e-01,
]
_REAL_TR_IMU_TO_VELO = [
    9.999976e-01,
    7.553071e-04,
    -2.035826e-03,
    -8.086759e-01,
    -7.854027e-04,
    9.998898e-01,
    -1.482298e-02,
    3.195559e-01,
    2.024406e-03,
    1.482454e-02,
    9.998881e-01,
    -7.997231e-01,
]

# name: (sampling weight, mean (h, w, l) metres, BGR colour, lidar reflectance)
_CLASSES = {
    "Car": (0.45, (1.53, 1.63, 3.88), (40, 40, 170), 0.45),
    "Van": (0.10, (2.21, 1.90, 5.08), (200, 200, 200), 0.50),
    "Truck": (0.07, (3.25, 2.59, 10.11), (30, 120, 200), 0.55),
    "Pedestrian": (0.15, (1.76, 0.66, 0.84), (160, 60, 60), 0.30),
    "Cyclist": (0.12, (1.74, 0.60, 1.76), (40, 180, 180), 0.35),
    "Person_sitting": (0.03, (1.27, 0.54, 0.80), (130, 40, 130), 0.30),
    "Tram": (0.03, (3.53, 2.54, 16.09), (60, 160, 60), 0.55),
    "Misc": (0.05, (1.91, 1.51, 3.58), (90, 90, 60), 0.40),
}
# ground materials: 0 verge, 1 asphalt, 2 lane marking
_GROUND_BGR = np.array([[70, 125, 95], [100, 98, 95], [225, 225, 225]], np.float32)
_GROUND_REFLECTANCE = np.array([0.35, 0.15, 0.70])
# box faces as corner indices of box3d_corners, each listed around the face
_FACES = ((0, 1, 2, 3), (4, 5, 6, 7), (0, 1, 5, 4), (2, 3, 7, 6), (0, 3, 7, 4), (1, 2, 6, 5))
_FACE_SHADE = (0.5, 1.15, 0.9, 0.9, 0.75, 0.75)  # bottom, top, front, back, sides


@dataclass(frozen=True)
class _Scene:
    """One frame's 3D content, rounded to label precision.

    Attributes:
        names: class name per object.
        location: (N, 3) bottom centres, metres, rectified camera 0.
        hwl: (N, 3) height, width, length, metres.
        rotation_y: (N,) radians.
        road_x: (2,) lateral extent [left, right] of the asphalt, metres.
    """

    names: list[str]
    location: np.ndarray
    hwl: np.ndarray
    rotation_y: np.ndarray
    road_x: np.ndarray


def _sig7(values: np.ndarray) -> np.ndarray:
    """Round to the 7 significant digits real KITTI calib files carry."""
    return np.array([float(f"{v:.6e}") for v in np.ravel(values)])


def _calib_text(rng: np.random.Generator, size: tuple[int, int]) -> str:
    """Calibration of one frame: the real one with fx, cx, cy moved to suit the image size."""
    width, height = size
    K = _REAL_K.copy()
    K[0, 0] = K[1, 1] = K[0, 0] + rng.uniform(-4.0, 4.0)
    # Real files have the principal point a few pixels up-left of the image centre.
    K[0, 2] = width / 2 - rng.uniform(6.0, 14.0)
    K[1, 2] = height / 2 - rng.uniform(4.0, 12.0)
    K = _sig7(K).reshape(3, 3)
    lines = []
    for name, column in _REAL_P_LAST_COLUMN.items():
        offset = np.linalg.solve(_REAL_K, np.array(column))  # metres, unchanged by K
        P = np.column_stack([K, _sig7(K @ offset)])
        lines.append((name, P.ravel()))
    lines += [
        ("R0_rect", _REAL_R0_RECT),
        ("Tr_velo_to_cam", _REAL_TR_VELO_TO_CAM),
        ("Tr_imu_to_velo", _REAL_TR_IMU_TO_VELO),
    ]
    return "".join(f"{k}: " + " ".join(f"{v:.12e}" for v in vals) + "\n" for k, vals in lines) + "\n"


def _sample_scene(rng: np.random.Generator) -> _Scene:
    """2-5 objects on the ground, 5-45 m ahead, inside the horizontal field of view, apart."""

    def place(name: str, size: np.ndarray, placed: list) -> tuple | None:
        h, w, length = size
        z = rng.uniform(5.0, 45.0)
        x = z * np.tan(rng.uniform(-0.65, 0.65))  # centre inside the ~80 deg horizontal view
        radius = 0.5 * np.hypot(w, length)
        # Keep the whole box well in front of the camera and clear of every other box.
        if z - radius < 3.0 or any(np.hypot(x - r[0], z - r[1]) < radius + r[6] + 0.5 for _, r in placed):
            return None
        # row: (x, z, h, w, l, ry, bird's-eye radius)
        return name, (round(x, 2), round(z, 2), h, w, length, round(rng.uniform(-np.pi, np.pi), 2), radius)

    placed = place_objects(rng, _CLASSES, jitter=0.06, wanted=int(rng.integers(2, 6)), attempts=200, place=place)
    names = [name for name, _ in placed]
    arr = np.array([row for _, row in placed], dtype=np.float64).reshape(-1, 7)
    location = np.column_stack([arr[:, 0], np.full(len(arr), CAMERA_HEIGHT_M), arr[:, 1]])
    centre = rng.uniform(-2.0, 2.0)
    return _Scene(names, location, arr[:, 2:5], arr[:, 5], np.array([centre - 5.5, centre + 5.5]))


def _boxes(scene: _Scene, t: np.ndarray) -> np.ndarray:
    """(N, 7) project-convention boxes of the scene, in the frame rect + ``t``."""
    return kitti_label_to_box3d(scene.location, scene.hwl, scene.rotation_y, t)


def _f2(value: float) -> str:
    """Two decimals as in label files, without a '-0.00'."""
    return f"{round(float(value), 2) + 0.0:.2f}"


def _label_lines(scene: _Scene, calib: KittiCalib, size: tuple[int, int], rng: np.random.Generator) -> list[str]:
    """Label lines of the objects that show in the image, then one DontCare region."""
    width, height = size
    K, t = split_projection(calib.P2)
    extent = box_extent_in_image(box3d_corners(_boxes(scene, t)), K)  # (N, 4) unclipped
    clipped = np.clip(extent, 0.0, [width - 1, height - 1, width - 1, height - 1])
    lines = []
    for i, name in enumerate(scene.names):
        area = np.prod(extent[i, 2:] - extent[i, :2])
        visible = np.prod(np.maximum(clipped[i, 2:] - clipped[i, :2], 0.0))
        if visible <= 0.0:
            continue  # entirely outside the image
        x, y, z = scene.location[i]
        alpha = (scene.rotation_y[i] - np.arctan2(x, z) + np.pi) % (2 * np.pi) - np.pi
        numbers = [alpha, *clipped[i], *scene.hwl[i], x, y, z, scene.rotation_y[i]]
        # occluded is 0: boxes never overlap in 3D and 2D overlap is not tracked
        lines.append(" ".join([name, _f2(1.0 - visible / area), "0"] + [_f2(v) for v in numbers]))
    # DontCare: a small far-away region just around the horizon, as in real labels.
    cx, cy = K[0, 2], K[1, 2]
    w, h = rng.uniform(15.0, 80.0), rng.uniform(8.0, 25.0)
    left, top = cx + rng.uniform(-0.3, 0.3) * width, cy - rng.uniform(0.2, 0.8) * h
    box = " ".join(_f2(v) for v in (left, top, left + w, top + h))
    lines.append(f"DontCare -1 -1 -10 {box} -1 -1 -1 -1000 -1000 -1000 -10")
    return lines


def _ground_material(x: np.ndarray, z: np.ndarray, road_x: np.ndarray) -> np.ndarray:
    """Material index at ground points (rect x, z): verge, asphalt, or dashed lane marking."""
    material = ((x > road_x[0]) & (x < road_x[1])).astype(np.int64)
    lane_centre = road_x.mean()
    dashed = (np.abs(np.abs(x - lane_centre) - 1.8) < 0.08) & (np.mod(z, 9.0) < 3.0)
    solid = np.minimum(np.abs(x - road_x[0]), np.abs(x - road_x[1])) < 0.1
    material[dashed | solid] = 2
    return material


def _scan(scene: _Scene, calib: KittiCalib, rng: np.random.Generator) -> np.ndarray:
    """Simulated 64-beam scan: (N, 4) float32 velodyne x, y, z, reflectance.

    Every ray is intersected with the ground plane and with each box (slab test in the box's
    own frame); the nearest hit wins and rays without a hit within ``MAX_RANGE_M`` are dropped.
    """
    elev, azim = np.meshgrid(np.radians(BEAM_ELEVATIONS_DEG), np.radians(AZIMUTHS_DEG))
    dirs_velo = np.stack([np.cos(elev) * np.cos(azim), np.cos(elev) * np.sin(azim), np.sin(elev)], -1)
    dirs_velo = dirs_velo.reshape(-1, 3)  # (R, 3) unit vectors
    to_rect = velo_to_rect(calib)
    origin = to_rect[:3, 3]  # velodyne origin in rect coordinates
    dirs = dirs_velo @ to_rect[:3, :3].T  # (R, 3); ray parameter stays metres in the velodyne frame
    with np.errstate(divide="ignore"):
        t_ground = np.where(dirs[:, 1] > 0, (CAMERA_HEIGHT_M - origin[1]) / dirs[:, 1], np.inf)

    boxes = _boxes(scene, np.zeros(3))  # (M, 7) centres in rect coordinates
    rot = yaw_to_rotation(boxes[:, 6])  # (M, 3, 3) box -> rect
    half = 0.5 * boxes[:, [3, 5, 4]]  # (M, 3) along box x (l), y (h), z (w)
    o_local = np.einsum("mji,mj->mi", rot, origin - boxes[:, :3])  # (M, 3)
    d_local = np.einsum("mji,rj->mri", rot, dirs)  # (M, R, 3)
    d_local = np.where(np.abs(d_local) < 1e-12, 1e-12, d_local)  # no 0/0 in the slab test
    t1 = (-half[:, None] - o_local[:, None]) / d_local
    t2 = (half[:, None] - o_local[:, None]) / d_local
    t_near = np.minimum(t1, t2).max(-1)  # (M, R)
    t_box = np.where((t_near <= np.maximum(t1, t2).min(-1)) & (t_near > 0), t_near, np.inf)

    t_all = np.vstack([t_ground[None], t_box])  # (1 + M, R); row 0 is the ground
    hit_id = t_all.argmin(0)
    t_hit = t_all[hit_id, np.arange(t_all.shape[1])]
    keep = t_hit <= MAX_RANGE_M
    hit_id, t_hit, dirs = hit_id[keep], t_hit[keep] + rng.normal(0.0, 0.01, keep.sum()), dirs[keep]
    points_rect = origin + t_hit[:, None] * dirs
    points_velo = transform_points(np.linalg.inv(to_rect), points_rect)

    ground_refl = _GROUND_REFLECTANCE[_ground_material(points_rect[:, 0], points_rect[:, 2], scene.road_x)]
    object_refl = np.array([0.0] + [_CLASSES[n][3] for n in scene.names])
    refl = np.where(hit_id == 0, ground_refl, object_refl[hit_id]) + rng.normal(0.0, 0.05, hit_id.size)
    return np.column_stack([points_velo, np.clip(refl, 0.0, 0.99)]).astype("<f4")


def _render(scene: _Scene, calib: KittiCalib, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """BGR uint8 image: sky, textured ground below the horizon, boxes painted far to near."""
    width, height = size
    K, t = split_projection(calib.P2)
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    rays = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(K).T  # (H, W, 3) optical, z = 1
    # Sky: pale at the horizon, deeper blue towards the top.
    up = np.clip(-rays[..., 1] * 4.0, 0.0, 1.0)[..., None].astype(np.float32)
    image = (1 - up) * np.array([235, 215, 200], np.float32) + up * np.array([200, 140, 90], np.float32)
    # Ground: intersect each pixel ray with y_rect = CAMERA_HEIGHT_M (optical = rect + t).
    ground = rays[..., 1] > 1e-4
    s = (CAMERA_HEIGHT_M + t[1]) / rays[..., 1][ground]
    x, z = s * rays[..., 0][ground] - t[0], s - t[2]
    blotches = cv2.resize(rng.normal(0.0, 10.0, (height // 12, width // 12)), (width, height))
    colour = _GROUND_BGR[_ground_material(x, z, scene.road_x)] + blotches[ground][:, None]
    haze = np.exp(-z / 150.0)[:, None]  # far ground fades into the sky colour
    image[ground] = haze * colour + (1 - haze) * np.array([235, 215, 200], np.float32)

    boxes = _boxes(scene, t)
    corners = box3d_corners(boxes)  # (N, 8, 3) optical
    for i in np.argsort(-boxes[:, 2]):  # painter's algorithm: farthest first
        uv, _ = project(corners[i], K)
        base = np.array(_CLASSES[scene.names[i]][2], np.float32) * rng.uniform(0.8, 1.2)
        for face, shade in zip(_FACES, _FACE_SHADE):
            face_centre = corners[i, list(face)].mean(0)
            if np.dot(face_centre - boxes[i, :3], face_centre) >= 0:
                continue  # back face: its outward normal points away from the camera
            pts = np.round(uv[list(face)] * 16).astype(np.int32)  # 4 fractional bits
            colour = tuple(float(c) for c in np.clip(base * shade, 0, 255))
            cv2.fillConvexPoly(image, pts, colour, cv2.LINE_8, 4)
    # Sensor noise: makes PNG/JPEG sizes realistic instead of flat-colour tiny files.
    image += rng.normal(0.0, 4.0, image.shape).astype(np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


@register_synth("kitti")
def synth_kitti(out_dir: Path, *, seed: int = 0) -> None:
    """Write a tiny KITTI object dataset (6 training, 2 testing frames) under ``out_dir``.

    Args:
        out_dir: root; ``training/`` and ``testing/`` are created in it.
        seed: the same seed gives byte-identical files.
    """
    out_dir = Path(out_dir)
    frames = [("training", i) for i in range(N_TRAIN)] + [("testing", i) for i in range(N_TEST)]
    for index, (split, frame) in enumerate(frames):
        # (seed, index) as entropy: seeds never share frames, unlike seed + index.
        rng = np.random.default_rng([seed, index])
        size = IMAGE_SIZES[(seed + index) % len(IMAGE_SIZES)]
        calib_text = _calib_text(rng, size)
        calib = parse_kitti_calib(calib_text)  # derive everything from the numbers as written
        scene = _sample_scene(rng)
        files = {"calib": calib_text.encode(), "velodyne": _scan(scene, calib, rng).tobytes()}
        if split == "training":
            files["label_2"] = ("\n".join(_label_lines(scene, calib, size, rng)) + "\n").encode()
        files["image_2"] = cv2.imencode(".png", _render(scene, calib, size, rng))[1].tobytes()
        for folder, data in files.items():
            ext = {"calib": "txt", "label_2": "txt", "velodyne": "bin", "image_2": "png"}[folder]
            (out_dir / split / folder).mkdir(parents=True, exist_ok=True)
            write_atomic(out_dir / split / folder / f"{frame:06d}.{ext}", data)
        for k in PREV_FRAMES[index]:
            earlier = dataclasses.replace(scene, location=scene.location + [0.0, 0.0, k * EGO_STEP_M])
            image = _render(earlier, calib, size, np.random.default_rng([seed, index, 1000 + k]))
            write_atomic(
                out_dir / split / "prev_2" / f"{frame:06d}_{k:02d}.png", cv2.imencode(".png", image)[1].tobytes()
            )
