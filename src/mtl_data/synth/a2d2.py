"""Synthetic A2D2 dataset in the exact native layout and file formats (images at 1/4 size).

Layout written under ``out_dir`` (``<scene>`` e.g. ``20180807_145028``, ``<p>`` the same 14
digits without the underscore, ``<ID>`` 9 digits; folder ``cam_front_center``, token
``frontcenter``)::

    cams_lidars.json                      real structure; front_center (Telecam) and side_left
                                          (Fisheye) with intrinsics scaled to 480x302
    camera_lidar_semantic/class_list.json the real 55 colours -> names
    camera_lidar_semantic/<scene>/        3 scenes x 3 front_center frames (+ 3 side_left in scene 1)
        camera/cam_<name>/<p>_camera_<token>_<ID>.png + .json   RGB image (distorted) + frame info
        lidar/cam_<name>/<p>_lidar_<token>_<ID>.npz             semantic-subset key set
        label/cam_<name>/<p>_label_<token>_<ID>.png             class colours (distorted)
    camera_lidar_semantic_bboxes/<scene 1>/{camera,lidar,label}/cam_front_center/...  same bytes
    camera_lidar_semantic_bboxes/<scene 1>/label3D/cam_front_center/<p>_label3D_frontcenter_<ID>.json
    camera_lidar_semantic_bus/<scene 1>/bus/<p>_bus_signals.json   array, one entry per camera frame
    camera_lidar/<scene 2>/bus/<p>_bus_signals.json                sensor-fusion object, 100 Hz
    (scene 3 has no bus file)

What is consistent with what: each camera frame is one small 3D scene in that camera's view
frame (x forward, y left, z up, metres, origin at the camera): a flat road ``CAMERA_HEIGHT_M``
below the camera (the height seen in the real label3D/npz fixture) with dashed lane lines, sky
above, and 2-4 boxes standing on the road, fully inside the image and not overlapping in 2D.
The box parameters are rounded to what label3D holds *before* anything is derived from them.
The undistorted view (pinhole ``CamMatrix``) is rendered as image and as class-index map, then
warped into the ORIGINAL (distorted) geometry that A2D2 stores: for every original pixel its
undistorted position comes from ``cv2.undistortPoints`` (Telecam) or ``cv2.fisheye.undistortPoints``
(Fisheye) with ``CamMatrixOriginal``, ``Distortion`` and ``P = CamMatrix``, so undistorting the
stored files as the official tutorial does lines them up with the boxes and the points. The npz
holds a simulated scan of the five VLP-16 lidars at their real poses relative to the camera,
in the camera view frame, cut to the undistorted image; ``row``/``col`` are the ``CamMatrix``
projection, ``depth = x``, ``distance = |p|``. Bus signals are known functions of time
(`synth_steering_deg`, `synth_speed_kmh`) sampled at the bus times.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np

from mtl_data.files import write_atomic
from mtl_data.synth.objects import place_objects
from mtl_data.synth.registry import register_synth

SCALE = 0.25
WIDTH, HEIGHT = 480, 302  # 1920x1208 / 4
N_FRAMES = 3
CAMERA_HEIGHT_M = 1.75  # road below the camera (real label3D box bottoms and npz road points)
EGO_ROWS = 12  # bottom rows of the undistorted view that show the ego car
MAX_RANGE_M = 100.0
FRAME_US = 33_333  # 30 Hz cameras
#: (scene folder, UTC offset in hours of the local time in its name)
SCENES = (("20180807_145028", 2), ("20180810_142822", 2), ("20181108_091945", 1))
LIDAR_IDS = {"0": "front_center", "1": "front_left", "2": "front_right", "3": "rear_left", "4": "rear_right"}
VLP16_ELEVATIONS_DEG = np.linspace(-15.0, 15.0, 16)
AZIMUTH_STEP_DEG = 0.4

# ---- real configuration (hard-coded from the fixture cams_lidars.json, full resolution) ----
_VEHICLE = {
    "view": {"origin": [0.0, 0.0, 0.0], "x-axis": [1.0, 0.0, 0.0], "y-axis": [0.0, 1.0, 0.0]},
    "ego-dimensions": {"x-range": [-1.0, 4.0], "y-range": [-1.25, 1.25], "z-range": [-0.75, 1.5]},
}
_LIDAR_VIEWS = {  # name: (origin, x-axis, y-axis)
    "front_center": (
        [1.7183999999999997, 3.8163916471489756e-17, 1.1201406050000002],
        [-0.007840892071133887, -0.9999275831501491, -0.00912956006775139],
        [0.9807203123118539, -0.005906897013169535, -0.19532736005643384],
    ),
    "front_left": (
        [1.7115472144019115, 0.6309253612930116, 1.1183603410607053],
        [0.9997181756703177, -0.02247154565787787, -0.0076549898862032445],
        [0.013577535160789809, 0.8057433542223932, -0.5921091940389074],
    ),
    "front_right": (
        [1.7057192494119477, -0.6546311501997916, 1.1162099278760471],
        [-0.9998610375105861, 0.010662317224908232, 0.012814860890777973],
        [-0.01623086785658188, -0.798013739000296, -0.6024206431517679],
    ),
    "rear_left": (
        [-0.43094714121137156, 0.5880139308083067, 1.1479587720725783],
        [0.9429395447084686, -0.007441303046458202, 0.3328808225686139],
        [0.09087818558776738, 0.9675433570319885, -0.235798659130084],
    ),
    "rear_right": (
        [-0.4335855801921671, -0.6050262250544058, 1.1183086367434956],
        [-0.946105656109395, 0.022278038022261998, -0.3230909724825038],
        [0.06774258601831458, -0.9619486437056151, -0.26469935570846975],
    ),
}


def _view(origin: list, x_axis: list, y_axis: list) -> dict:
    return {"origin": origin, "x-axis": x_axis, "y-axis": y_axis}


_CAMERAS = {  # real key sets and key order (front_center has no CorrectedImagePort)
    "front_center": {
        "tstamp_delay": 25000,
        "view": _view(
            [1.711045726422736, -5.735179668849011e-09, 0.9431449279047172],
            [0.9997595802751106, 0.021372184646008877, -0.004900139956328717],
            [-0.021482638328964472, 0.9994877740097232, -0.02372100030596073],
        ),
        "view_": _view(
            [1.7110457264227357, -5.735179664512202e-09, 0.9431449279047173],
            [0.9996634642995799, 0.022799351501069053, -0.012375286489347262],
            [-0.022997507411583355, 0.999605659802198, -0.016113334362155302],
        ),
        "CamMatrix": [
            [1687.3369140625, 0.0, 965.43414055823814],
            [0.0, 1783.428466796875, 684.4193604186803],
            [0.0, 0.0, 1.0],
        ],
        "CamMatrixOriginal": [
            [1844.1774422790927, 0.0, 964.42990523863864],
            [0.0, 1841.5212239377258, 679.5331911948183],
            [0.0, 0.0, 1.0],
        ],
        "Distortion": [[-0.2611312587700434, 0.0, 0.0, 0.0, 0.0]],
        "Lens": "Telecam",
        "Resolution": [1920, 1208],
    },
    "side_left": {
        "tstamp_delay": 25000,
        "view": _view(
            [0.6510458405937454, 0.5799998572182938, 0.9431448238158191],
            [-0.018544344034239085, 0.9768772957615971, -0.2129949678510011],
            [-0.9997343869154344, -0.021032679180218387, -0.009422421415035534],
        ),
        "view_": _view(
            [0.6510458405937453, 0.5799998572182938, 0.9431448238158191],
            [-0.02370281060836645, 0.9754754725173522, -0.2188281958210878],
            [-0.9994396703958544, -0.02829603419996814, -0.01787958857412887],
        ),
        "CamMatrix": [
            [821.96843909434017, 0.0, 989.87613610492576],
            [0.0, 822.16288440668507, 654.82930537617779],
            [0.0, 0.0, 1.0],
        ],
        "CamMatrixOriginal": [
            [970.06907174517983, 0.0, 972.36299202265582],
            [0.0, 970.29855182577683, 639.87287033389248],
            [0.0, 0.0, 1.0],
        ],
        "CorrectedImagePort": None,
        "Distortion": [[-0.043374001393116354, 0.0, 0.0, 0.0]],
        "Lens": "Fisheye",
        "Resolution": [1920, 1208],
    },
}

CLASS_LIST = {  # the real class_list.json, in file order
    "#ff0000": "Car 1",
    "#c80000": "Car 2",
    "#960000": "Car 3",
    "#800000": "Car 4",
    "#b65906": "Bicycle 1",
    "#963204": "Bicycle 2",
    "#5a1e01": "Bicycle 3",
    "#5a1e1e": "Bicycle 4",
    "#cc99ff": "Pedestrian 1",
    "#bd499b": "Pedestrian 2",
    "#ef59bf": "Pedestrian 3",
    "#ff8000": "Truck 1",
    "#c88000": "Truck 2",
    "#968000": "Truck 3",
    "#00ff00": "Small vehicles 1",
    "#00c800": "Small vehicles 2",
    "#009600": "Small vehicles 3",
    "#0080ff": "Traffic signal 1",
    "#1e1c9e": "Traffic signal 2",
    "#3c1c64": "Traffic signal 3",
    "#00ffff": "Traffic sign 1",
    "#1edcdc": "Traffic sign 2",
    "#3c9dc7": "Traffic sign 3",
    "#ffff00": "Utility vehicle 1",
    "#ffffc8": "Utility vehicle 2",
    "#e96400": "Sidebars",
    "#6e6e00": "Speed bumper",
    "#808000": "Curbstone",
    "#ffc125": "Solid line",
    "#400040": "Irrelevant signs",
    "#b97a57": "Road blocks",
    "#000064": "Tractor",
    "#8b636c": "Non-drivable street",
    "#d23273": "Zebra crossing",
    "#ff0080": "Obstacles / trash",
    "#fff68f": "Poles",
    "#960096": "RD restricted area",
    "#ccff99": "Animals",
    "#eea2ad": "Grid structure",
    "#212cb1": "Signal corpus",
    "#b432b4": "Drivable cobblestone",
    "#ff46b9": "Electronic traffic",
    "#eee9bf": "Slow drive area",
    "#93fdc2": "Nature object",
    "#9696c8": "Parking area",
    "#b496c8": "Sidewalk",
    "#48d1cc": "Ego car",
    "#c87dd2": "Painted driv. instr.",
    "#9f79ee": "Traffic guide obj.",
    "#8000ff": "Dashed line",
    "#ff00ff": "RD normal street",
    "#87ceff": "Sky",
    "#f1e6ff": "Buildings",
    "#60458f": "Blurred area",
    "#352e52": "Rain dirt",
}
_COLOUR_OF = {name: colour for colour, name in CLASS_LIST.items()}
#: label-index -> class name for the stuff classes; objects get indices len(_STUFF) + i
_STUFF = ("RD normal street", "Sky", "Ego car", "Dashed line")

# label3D class: (sampling weight, mean [l, w, h] m, semantic class of class_list, BGR, reflectance)
CLASSES = {
    "Car": (0.40, (4.45, 1.82, 1.50), "Car", (40, 40, 180), 40),
    "VanSUV": (0.12, (4.90, 1.95, 1.85), "Car", (185, 185, 185), 45),
    "Truck": (0.10, (8.50, 2.50, 3.30), "Truck", (30, 120, 210), 60),
    "Pedestrian": (0.16, (0.65, 0.65, 1.75), "Pedestrian", (150, 60, 60), 20),
    "Cyclist": (0.12, (1.80, 0.70, 1.75), "Bicycle", (40, 170, 170), 25),
    "Bicycle": (0.10, (1.70, 0.60, 1.10), "Bicycle", (60, 90, 140), 30),
}
#: box corners in the tutorial's ``get_points`` order: brl, bfl, bfr, brr, trl, tfl, tfr, trr
CORNER_SIGNS = np.array(
    [[-1, 1, -1], [1, 1, -1], [1, -1, -1], [-1, -1, -1], [-1, 1, 1], [1, 1, 1], [1, -1, 1], [-1, -1, 1]],
    dtype=np.float64,
)
# faces (corner indices around each) and their shade: bottom, top, front, rear, left, right
_FACES = ((0, 1, 2, 3), (4, 5, 6, 7), (1, 2, 6, 5), (0, 3, 7, 4), (0, 1, 5, 4), (3, 2, 6, 7))
_FACE_SHADE = (0.5, 1.15, 0.95, 0.85, 0.75, 0.7)


def synth_steering_deg(t_us: float | np.ndarray) -> float | np.ndarray:
    """Signed steering-wheel angle (degrees, + = left) written to every bus file: 30 sin(2 pi t / 4 s)."""
    phase = np.mod(np.asarray(t_us, dtype=np.float64), 4e6) / 4e6
    out = 30.0 * np.sin(2.0 * np.pi * phase)
    return float(out) if out.ndim == 0 else out


def synth_speed_kmh(t_us: float | np.ndarray) -> float | np.ndarray:
    """Vehicle speed (km/h) written to every bus file: 35 + 5 sin(2 pi t / 20 s)."""
    out = 35.0 + 5.0 * np.sin(2.0 * np.pi * np.mod(np.asarray(t_us, dtype=np.float64), 20e6) / 20e6)
    return float(out) if out.ndim == 0 else out


def _other_signals(t_us: np.ndarray) -> dict[str, tuple[str | None, np.ndarray]]:
    t = np.asarray(t_us, dtype=np.float64)
    return {
        "accelerator_pedal": ("Unit_PerCent", 20.0 + 10.0 * np.sin(2 * np.pi * np.mod(t, 7e6) / 7e6)),
        "brake_pressure": ("Unit_Bar", 0.3 + 0.2 * np.cos(2 * np.pi * np.mod(t, 11e6) / 11e6)),
    }


def cams_lidars() -> dict:
    """The ``cams_lidars.json`` content: real values, camera intrinsics scaled by ``SCALE``."""
    cameras = {}
    for name, cam in _CAMERAS.items():
        cam = json.loads(json.dumps(cam))
        for key in ("CamMatrix", "CamMatrixOriginal"):
            cam[key] = [[v * SCALE for v in cam[key][0]], [v * SCALE for v in cam[key][1]], cam[key][2]]
        cam["Resolution"] = [WIDTH, HEIGHT]
        cameras[name] = cam
    lidars = {name: {"view": _view(*v)} for name, v in _LIDAR_VIEWS.items()}
    return {"vehicle": _VEHICLE, "lidars": lidars, "cameras": cameras}


def _view_to_vehicle(view: dict) -> np.ndarray:
    """4x4 view -> vehicle transform (tutorial ``get_transform_to_global``)."""
    x = np.asarray(view["x-axis"], np.float64)
    x = x / np.linalg.norm(x)
    y = np.asarray(view["y-axis"], np.float64)
    y = y - x * (x @ y)
    y = y / np.linalg.norm(y)
    T = np.eye(4)
    T[:3, :3] = np.column_stack([x, y, np.cross(x, y)])
    T[:3, 3] = view["origin"]
    return T


def axis_angle_rotation(axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """(N, 3, 3) ``cos I + sin [a]x + (1 - cos) a a^T`` (tutorial ``axis_angle_to_rotation_mat``)."""
    a = np.asarray(axis, np.float64).reshape(-1, 3)
    c, s = np.cos(angle).reshape(-1, 1, 1), np.sin(angle).reshape(-1, 1, 1)
    cross = np.zeros((len(a), 3, 3))
    cross[:, 0, 1], cross[:, 0, 2], cross[:, 1, 2] = -a[:, 2], a[:, 1], -a[:, 0]
    cross = cross - cross.transpose(0, 2, 1)
    return c * np.eye(3) + s * cross + (1 - c) * np.einsum("ni,nj->nij", a, a)


def box_corners(center: np.ndarray, size: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """(N, 8, 3) corners in ``CORNER_SIGNS`` order from centres, [l, w, h] and (N, 3, 3) rotations."""
    local = CORNER_SIGNS[None] * (0.5 * np.asarray(size, np.float64).reshape(-1, 1, 3))
    return np.einsum("nij,nkj->nki", rotation, local) + np.asarray(center, np.float64).reshape(-1, 1, 3)


def view_to_pixels(points: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(col, row) of view-frame points: optical (X, Y, Z) = (-y, -z, x), then ``K``."""
    p = np.asarray(points, np.float64).reshape(-1, 3)
    col = (K[0, 0] * -p[:, 1] + K[0, 1] * -p[:, 2]) / p[:, 0] + K[0, 2]
    row = K[1, 1] * -p[:, 2] / p[:, 0] + K[1, 2]
    return col, row


@dataclass(frozen=True)
class _Scene:
    """One camera frame's 3D content, at label3D precision (camera view frame)."""

    classes: list[str]
    center: np.ndarray  # (N, 3)
    size: np.ndarray  # (N, 3) l, w, h
    axis_z: np.ndarray  # (N,) +-1
    rot_angle: np.ndarray  # (N,)
    lane_y: float  # lateral centre of the ego lane
    dash_phase: float

    @property
    def rotation(self) -> np.ndarray:
        axes = np.column_stack([np.zeros((len(self.axis_z), 2)), self.axis_z])
        return axis_angle_rotation(axes, self.rot_angle)

    @property
    def corners(self) -> np.ndarray:
        return box_corners(self.center, self.size, self.rotation)


def _bbox2d(corners: np.ndarray, K: np.ndarray) -> np.ndarray:
    col, row = view_to_pixels(corners.reshape(-1, 3), K)
    col, row = col.reshape(-1, 8), row.reshape(-1, 8)
    return np.column_stack([col.min(1), row.min(1), col.max(1), row.max(1)])


def _sample_scene(rng: np.random.Generator, K: np.ndarray) -> _Scene:
    """2-4 boxes on the road 6-40 m ahead, fully in the image above the ego band, apart in 2D."""
    half_fov = np.arctan(0.5 * WIDTH / K[0, 0])

    def place(name: str, size: np.ndarray, placed: list) -> tuple | None:
        x = rng.uniform(6.0, 40.0)
        y = x * np.tan(rng.uniform(-0.8, 0.8) * half_fov)
        axis_z = -1.0 if rng.random() < 0.75 else 1.0  # the fixture has [0, 0, -1]
        rot_angle = float(np.mod(rng.uniform(-np.pi, np.pi) * axis_z, 2 * np.pi))
        center = np.round([x, y, -CAMERA_HEIGHT_M + 0.5 * size[2]], 5)
        rot = axis_angle_rotation(np.array([0.0, 0.0, axis_z]), rot_angle)
        box = _bbox2d(box_corners(center, size, rot), K)[0]
        inside = box[0] >= 2 and box[1] >= 2 and box[2] <= WIDTH - 3 and box[3] <= HEIGHT - EGO_ROWS - 3
        apart = all(
            box[0] > b[2] + 2 or b[0] > box[2] + 2 or box[1] > b[3] + 2 or b[1] > box[3] + 2 for _, b in placed
        )  # disjoint 2D boxes: no occlusion, no 3D overlap
        return ((name, center, size, axis_z, rot_angle), box) if inside and apart else None

    rows = [
        row
        for row, _ in place_objects(
            rng, CLASSES, jitter=0.05, wanted=int(rng.integers(2, 5)), attempts=500, place=place
        )
    ]
    return _Scene(
        [r[0] for r in rows],
        np.array([r[1] for r in rows]).reshape(-1, 3),
        np.array([r[2] for r in rows]).reshape(-1, 3),
        np.array([r[3] for r in rows]),
        np.array([r[4] for r in rows]),
        float(rng.uniform(-1.0, 1.0)),
        float(rng.uniform(0, 9)),
    )


def _dashed(scene: _Scene, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Whether road points (view x, y) are on a dashed lane line: 3 m dashes every 9 m, 15 cm wide."""
    return (np.abs(np.abs(y - scene.lane_y) - 1.75) < 0.075) & (np.mod(x + scene.dash_phase, 9.0) < 3.0)


def _label_colours(scene: _Scene) -> list[str]:
    """Class-list colour per label index: stuff, then objects with instance shades (Car 1, Car 2...)."""
    colours, seen = [_COLOUR_OF[n] for n in _STUFF], {}
    for name in scene.classes:
        semantic = CLASSES[name][2]
        seen[semantic] = seen.get(semantic, 0) + 1
        shades = [n for n in _COLOUR_OF if n.rsplit(" ", 1)[0] == semantic]
        colours.append(_COLOUR_OF[shades[min(seen[semantic], len(shades)) - 1]])
    return colours


def _distortion_map(cam: dict) -> np.ndarray:
    """Undistorted (CamMatrix) position of every original pixel: (H, W, 2) float64 (col, row)."""
    K, K0, D = (np.array(cam[k], np.float64) for k in ("CamMatrix", "CamMatrixOriginal", "Distortion"))
    u, v = np.meshgrid(np.arange(WIDTH, dtype=np.float64), np.arange(HEIGHT, dtype=np.float64))
    pts = np.stack([u, v], -1).reshape(-1, 1, 2)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
    if cam["Lens"] == "Fisheye":
        und = cv2.fisheye.undistortPoints(pts, K0, D[:, :4], P=K, criteria=criteria)
    else:
        und = cv2.undistortPoints(pts, K0, D, P=K, criteria=criteria)
    return und.reshape(HEIGHT, WIDTH, 2)


def _render(scene: _Scene, K: np.ndarray, und: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Render the undistorted view on a canvas covering ``und``, then warp it to the original.

    Returns (BGR uint8 image, label-index uint8 map), both in the original (distorted) geometry.
    """
    x0, y0 = np.floor(und.min((0, 1))).astype(int) - 2
    x1, y1 = np.ceil(und.max((0, 1))).astype(int) + 2
    x0, y0, x1, y1 = min(x0, 0), min(y0, 0), max(x1, WIDTH), max(y1, HEIGHT)
    Kc = K.copy()
    Kc[0, 2] -= x0
    Kc[1, 2] -= y0
    u, v = np.meshgrid(np.arange(x1 - x0, dtype=np.float64), np.arange(y1 - y0, dtype=np.float64))
    ray_y, ray_z = -(u - Kc[0, 2]) / Kc[0, 0], -(v - Kc[1, 2]) / Kc[1, 1]  # view-frame ray (1, y, z)
    up = np.clip(ray_z * 3.0, 0.0, 1.0)[..., None].astype(np.float32)
    horizon_bgr = np.array([245, 225, 205], np.float32)
    image = (1 - up) * horizon_bgr + up * np.array([225, 160, 100], np.float32)
    label = np.full(u.shape, _STUFF.index("Sky"), np.uint8)
    ground = ray_z < -1e-6
    s = CAMERA_HEIGHT_M / -ray_z[ground]  # forward distance of the road point
    gy = s * ray_y[ground]
    dashed = _dashed(scene, s, gy)
    blotches = cv2.resize(rng.normal(0.0, 8.0, ((y1 - y0) // 10, (x1 - x0) // 10)), (x1 - x0, y1 - y0))
    colour = np.where(dashed[:, None], np.float32(225), np.array([95, 98, 100], np.float32))
    haze = np.exp(-s / 150.0)[:, None]
    image[ground] = haze * (colour + blotches[ground][:, None]) + (1 - haze) * horizon_bgr
    label[ground] = np.where(dashed, _STUFF.index("Dashed line"), _STUFF.index("RD normal street"))

    corners = scene.corners
    for i in np.argsort(-scene.center[:, 0]):  # painter's algorithm: farthest first
        col, row = view_to_pixels(corners[i], Kc)
        base = np.array(CLASSES[scene.classes[i]][3], np.float32) * rng.uniform(0.85, 1.15)
        for face, shade in zip(_FACES, _FACE_SHADE):
            face_centre = corners[i, list(face)].mean(0)
            if np.dot(face_centre - scene.center[i], face_centre) >= 0:
                continue  # back face: its outward normal points away from the camera
            pts = np.round(np.column_stack([col, row])[list(face)] * 16).astype(np.int32)
            bgr = tuple(float(c) for c in np.clip(base * shade, 0, 255))
            cv2.fillConvexPoly(image, pts, bgr, cv2.LINE_8, 4)
            cv2.fillConvexPoly(label, pts, len(_STUFF) + int(i), cv2.LINE_8, 4)
    ego = v + y0 >= HEIGHT - EGO_ROWS - 0.5
    image[ego] = np.array([70, 72, 66], np.float32)
    label[ego] = _STUFF.index("Ego car")

    mapx = (und[..., 0] - x0).astype(np.float32)
    mapy = (und[..., 1] - y0).astype(np.float32)
    image = cv2.remap(image, mapx, mapy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    label = cv2.remap(label, mapx, mapy, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
    image += rng.normal(0.0, 3.0, image.shape).astype(np.float32)  # sensor noise
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), label


def _scan(scene: _Scene, cam_name: str, K: np.ndarray, cam_tstamp: int, rng: np.random.Generator) -> dict:
    """Simulated VLP-16 scans of the five lidars at their real poses: the npz arrays."""
    cam_from_vehicle = np.linalg.inv(_view_to_vehicle(_CAMERAS[cam_name]["view"]))
    elev, azim = np.meshgrid(np.radians(VLP16_ELEVATIONS_DEG), np.radians(np.arange(0, 360, AZIMUTH_STEP_DEG)))
    dirs_lidar = np.stack([np.cos(elev) * np.cos(azim), np.cos(elev) * np.sin(azim), np.sin(elev)], -1)
    dirs_lidar, azim = dirs_lidar.reshape(-1, 3), azim.ravel()
    rot = scene.rotation
    half = 0.5 * scene.size
    out = []
    for lidar_id, lidar_name in LIDAR_IDS.items():
        T = cam_from_vehicle @ _view_to_vehicle(_view(*_LIDAR_VIEWS[lidar_name]))
        origin, dirs = T[:3, 3], dirs_lidar @ T[:3, :3].T
        with np.errstate(divide="ignore"):
            t_ground = np.where(dirs[:, 2] < 0, (-CAMERA_HEIGHT_M - origin[2]) / dirs[:, 2], np.inf)
        o_local = np.einsum("mji,mj->mi", rot, origin - scene.center)  # (M, 3) box frame
        d_local = np.einsum("mji,rj->mri", rot, dirs)  # (M, R, 3)
        d_local = np.where(np.abs(d_local) < 1e-12, 1e-12, d_local)
        t1 = (-half[:, None] - o_local[:, None]) / d_local
        t2 = (half[:, None] - o_local[:, None]) / d_local
        t_near = np.minimum(t1, t2).max(-1)
        t_box = np.where((t_near <= np.maximum(t1, t2).min(-1)) & (t_near > 0), t_near, np.inf)
        t_all = np.vstack([t_ground[None], t_box])  # row 0: road
        hit = t_all.argmin(0)
        t_hit = t_all[hit, np.arange(len(hit))] + rng.normal(0.0, 0.01, len(hit))
        points = origin + t_hit[:, None] * dirs
        with np.errstate(invalid="ignore", divide="ignore"):
            col, row = view_to_pixels(points, K)
            keep = (
                (t_hit <= MAX_RANGE_M)
                & (points[:, 0] > 0.5)
                & (col >= -0.5)
                & (col < WIDTH - 0.5)
                & (row >= -0.5)
                & (row < HEIGHT - EGO_ROWS - 0.5)
            )
        points, hit, az = points[keep], hit[keep], azim[keep]
        object_refl = np.array([0] + [CLASSES[n][4] for n in scene.classes])[hit]
        refl = np.where(hit == 0, np.where(_dashed(scene, points[:, 0], points[:, 1]), 90, 12), object_refl)
        refl = np.clip(refl + rng.integers(-6, 7, len(hit)), 1, 251).astype(np.int64)
        stamp = cam_tstamp - 50_000 + np.rint(az / (2 * np.pi) * 100_000).astype(np.int64)
        out.append((points, refl, col[keep], row[keep], stamp, np.full(len(hit), float(lidar_id)), az))
    points, refl, col, row, stamp, lidar, az = (np.concatenate(parts) for parts in zip(*out))
    return {
        "azimuth": az,
        "row": row,
        "lidar_id": lidar,
        "depth": points[:, 0].copy(),
        "reflectance": refl,
        "col": col,
        "points": points,
        "timestamp": stamp.astype(np.int64),
        "distance": np.linalg.norm(points, axis=1),
    }


def _label3d(scene: _Scene, K: np.ndarray) -> dict:
    boxes = {}
    for i, (corners, box) in enumerate(zip(scene.corners, _bbox2d(scene.corners, K))):
        boxes[f"box_{i}"] = {
            "2d_bbox": [round(float(v), 4) for v in box],
            "3d_points": corners.tolist(),
            "alpha": 0.0,
            "axis": [0.0, 0.0, float(scene.axis_z[i])],
            "center": scene.center[i].tolist(),
            "class": scene.classes[i],
            "id": i,
            "occlusion": 0.0,
            "rot_angle": float(scene.rot_angle[i]),
            "size": scene.size[i].tolist(),
            "truncation": 0.0,
        }  # fully visible, never overlapping
    return boxes


def _bus_semantic(frames: list[tuple[str, int]]) -> list:
    """Semantic-subset array: per camera frame a 3-sample window centred on its timestamp."""
    entries = []
    for frame_name, t in sorted(frames, key=lambda f: f[1]):
        angle = synth_steering_deg(t)
        slope = (synth_steering_deg(t + 10_000) - synth_steering_deg(t - 10_000)) / 2  # per 10 ms
        step = min(abs(slope), abs(angle))  # window mean = |angle|, never crossing zero
        flexray = {
            "steering_angle_calculated": {
                "unit": "Unit_DegreOfArc",
                "values": [abs(angle) - step, abs(angle), abs(angle) + step],
            },
            "steering_angle_calculated_sign": {"unit": None, "values": [int(angle < 0)] * 3},
        }
        for name, (unit, value) in {
            "vehicle_speed": ("Unit_KiloMeterPerHour", synth_speed_kmh(t)),
            **_other_signals(np.array(t)),
        }.items():
            flexray[name] = {"unit": unit, "values": [float(value)] * 3}
        flexray["driving_direction"] = {"unit": None, "values": [1, 1, 1]}  # forward
        flexray["gear"] = {"unit": None, "values": [11, 11, 11]}  # D
        entries.append({"frame_name": frame_name, "timestamp": t, "flexray": flexray})
    return entries


def _bus_sensor_fusion(t_first: int, t_last: int) -> dict:
    """Sensor-fusion object: every signal at 100 Hz from 0.5 s before to 0.5 s after the frames."""
    t = np.arange((t_first - 500_000) // 10_000 * 10_000, t_last + 500_001, 10_000, dtype=np.int64)
    angle = synth_steering_deg(t)
    signals = {
        "steering_angle_calculated": ("Unit_DegreOfArc", np.abs(angle)),
        "steering_angle_calculated_sign": (None, (angle < 0).astype(np.int64)),
        "vehicle_speed": ("Unit_KiloMeterPerHour", synth_speed_kmh(t)),
        **_other_signals(t),
    }
    return {
        name: {"unit": unit, "values": [[int(a), b] for a, b in zip(t, values.tolist())]}
        for name, (unit, values) in sorted(signals.items())
    }


def _json_bytes(doc: object, **kw) -> bytes:
    return json.dumps(doc, indent=4, **kw).encode()


def _frame_times(seed: int, scene_no: int) -> dict[str, list[tuple[int, int]]]:
    """(ID, cam_tstamp) of each camera's frames: 30 Hz, the time the ID implies since the scene start."""
    scene_dir, utc_offset = SCENES[scene_no]
    start = datetime.strptime(scene_dir, "%Y%m%d_%H%M%S").replace(tzinfo=timezone(timedelta(hours=utc_offset)))
    rng = np.random.default_rng([seed, 1000 + scene_no])
    first = int(rng.integers(1000, 20000))
    t0 = int(start.timestamp()) * 1_000_000
    stamps = [t0 + (first + k) * FRAME_US + int(rng.integers(-300, 300)) for k in range(N_FRAMES)]
    cams = {"front_center": [(first + k, stamps[k]) for k in range(N_FRAMES)]}
    if scene_no == 0:  # side_left: its own IDs (not aligned with front_center), a few ms off
        side_first = first - int(rng.integers(5, 40))
        offset = int(rng.choice([-1, 1]) * rng.integers(1000, 4000))
        cams["side_left"] = [
            (side_first + k, stamps[k] + offset + int(rng.integers(-200, 200))) for k in range(N_FRAMES)
        ]
    return cams


def _file_name(prefix: str, kind: str, cam_name: str, frame_id: int, ext: str) -> str:
    return f"{prefix}_{kind}_{cam_name.replace('_', '')}_{frame_id:09d}.{ext}"


def _frame_files(
    scene: _Scene,
    cam_name: str,
    cam: dict,
    und: np.ndarray,
    prefix: str,
    frame_id: int,
    cam_tstamp: int,
    rng: np.random.Generator,
) -> dict[str, bytes]:
    """Camera png + json, lidar npz, label png and label3D json of one frame, by relative path."""
    K = np.array(cam["CamMatrix"], np.float64)
    image, label = _render(scene, K, und, rng)
    lut = np.array([[int(c[i : i + 2], 16) for i in (5, 3, 1)] for c in _label_colours(scene)], np.uint8)  # BGR
    npz = io.BytesIO()
    np.savez(npz, **_scan(scene, cam_name, K, cam_tstamp, rng))
    folder = f"cam_{cam_name}"
    names = {
        kind: _file_name(prefix, kind, cam_name, frame_id, ext)
        for kind, ext in (("camera", "png"), ("lidar", "npz"), ("label", "png"), ("label3D", "json"))
    }
    info = {
        "cam_tstamp": cam_tstamp,
        "cam_name": cam_name,
        "image_zoom": 1.0,
        "image_png": names["camera"],
        "pcld_npz": names["lidar"],
        "pcld_view": cam["view"],
        "lidar_ids": LIDAR_IDS,
    }
    return {
        f"camera/{folder}/{names['camera']}": cv2.imencode(".png", image)[1].tobytes(),
        f"camera/{folder}/{names['camera'][:-4]}.json": _json_bytes(info),
        f"lidar/{folder}/{names['lidar']}": npz.getvalue(),
        f"label/{folder}/{names['label']}": cv2.imencode(".png", lut[label])[1].tobytes(),
        f"label3D/{folder}/{names['label3D']}": _json_bytes(_label3d(scene, K), sort_keys=True),
    }


@register_synth("a2d2")
def synth_a2d2(out_dir: Path, *, seed: int = 0) -> None:
    """Write a tiny A2D2 dataset (3 scenes, 12 camera frames) under ``out_dir``.

    Args:
        out_dir: root; ``cams_lidars.json`` and the subset folders are created in it.
        seed: the same seed gives byte-identical files.
    """
    out_dir = Path(out_dir)
    config = cams_lidars()
    write_atomic(out_dir / "cams_lidars.json", _json_bytes(config))
    write_atomic(out_dir / "camera_lidar_semantic/class_list.json", _json_bytes(CLASS_LIST) + b"\n")
    maps = {name: _distortion_map(cam) for name, cam in config["cameras"].items()}
    index = 0
    for scene_no, (scene_dir, _) in enumerate(SCENES):
        prefix = scene_dir.replace("_", "")
        bus_frames = []
        for cam_name, frames in _frame_times(seed, scene_no).items():
            cam = config["cameras"][cam_name]
            for frame_id, cam_tstamp in frames:
                rng = np.random.default_rng([seed, index])  # (seed, index): seeds never share frames
                index += 1
                scene = _sample_scene(rng, np.array(cam["CamMatrix"], np.float64))
                files = _frame_files(scene, cam_name, cam, maps[cam_name], prefix, frame_id, cam_tstamp, rng)
                in_bboxes = scene_no == 0 and cam_name == "front_center"  # the 3D-box subset
                for rel, data in files.items():
                    if not rel.startswith("label3D/"):
                        write_atomic(out_dir / "camera_lidar_semantic" / scene_dir / rel, data)
                    if in_bboxes:
                        write_atomic(out_dir / "camera_lidar_semantic_bboxes" / scene_dir / rel, data)
                bus_frames.append((_file_name(prefix, "camera", cam_name, frame_id, "json"), cam_tstamp))
        bus = f"bus/{prefix}_bus_signals.json"
        if scene_no == 0:
            write_atomic(
                out_dir / "camera_lidar_semantic_bus" / scene_dir / bus, _json_bytes(_bus_semantic(bus_frames))
            )
        elif scene_no == 1:
            stamps = [t for _, t in bus_frames]
            write_atomic(
                out_dir / "camera_lidar" / scene_dir / bus, _json_bytes(_bus_sensor_fusion(min(stamps), max(stamps)))
            )
