"""A2D2 -> semantic segmentation, sparse LiDAR depth, 2D/3D boxes and synchronized steering.

Native layout (whichever parts were downloaded, unpacked side by side)::

    RAW_ROOT/
      cams_lidars.json                          sensor configuration (required)
      camera_lidar_semantic/
        class_list.json                         "#rrggbb" -> class name (55 entries)
        20180807_145028/                        one folder per scene (drive)
          camera/cam_front_center/20180807145028_camera_frontcenter_000006882.png (+ .json)
          lidar/cam_front_center/20180807145028_lidar_frontcenter_000006882.npz
          label/cam_front_center/20180807145028_label_frontcenter_000006882.png
      camera_lidar_semantic_bboxes/
        <scene>/{camera,lidar,label}/...        same frames again (a subset)
        <scene>/label3D/cam_front_center/<prefix>_label3D_frontcenter_<ID>.json
      camera_lidar_semantic_bus/<scene>/bus/<prefix>_bus_signals.json
      camera_lidar/<scene>/{camera,lidar}/...   sensor fusion (unlabelled frames)
      camera_lidar/<scene>/bus/<prefix>_bus_signals.json

A frame found in several parts becomes one sample with every label it has. Per frame:

* the camera PNG and the label PNG are in the ORIGINAL (distorted) geometry; both are
  undistorted with the camera's own model (fisheye or pinhole by ``Lens``), the label with
  nearest-neighbour on class ids so no class is invented. ``K`` = the undistorted ``CamMatrix``.
* ``seg``: each label colour through ``class_list.json`` and the unified table; a colour not in
  the list is ignored and counted (``notes.seg_unknown_color_px`` in ingest.json).
* ``depth``: the npz's ``depth`` (forward distance = optical z) at its own ``row``/``col``
  (already in the undistorted image); nearest point per pixel. Semantic-subset keys and the
  sensor-fusion ``pcloud_*`` keys (invalid points dropped) are both read.
* ``det2d`` / ``det3d`` from label3D: ``2d_bbox`` as is (undistorted pixels); boxes converted
  from the camera view frame (x fwd, y left, z up, axis-angle) to the optical frame.
* ``steer``: signed steering-wheel angle and speed interpolated at the frame's ``cam_tstamp``
  from the scene's bus file (either format); no bus sample within ``--max-bus-gap-ms`` -> no
  steer label (counted as ``notes.steer_bus_gap``; a scene without a bus file as
  ``notes.steer_no_bus_file``).

Splits: A2D2 has no official split; everything is ``train`` unless ``--val-scenes`` or
``--val-fraction`` moves whole scenes to ``val``: exactly round(fraction x scenes), at least one
(never frames of one drive on both sides).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from mtl_data.errors import InputError, LayoutError
from mtl_data.ingest.a2d2_bus import BusSignals, read_bus_file, steering_at
from mtl_data.ingest.layout import check_root, nothing_found
from mtl_data.ingest.readers import read_image, read_json
from mtl_data.ingest.registry import Converter, Frame, register_converter
from mtl_data.ingest.splits import val_groups
from mtl_data.schema import a2d2_geometry as ag
from mtl_data.schema import geometry as geo
from mtl_data.schema.sample import IGNORE_INDEX, Det2D, Det3D, Sample, make_key
from mtl_data.schema.taxonomy import class_map

PARTS = ("camera_lidar_semantic", "camera_lidar_semantic_bboxes", "camera_lidar")
BUS_DIRS = ("camera_lidar_semantic_bus", "camera_lidar")
CAMERAS = ("front_left", "front_right", "front_center", "side_left", "side_right", "rear_center")
_SCENE = re.compile(r"^\d{8}_\d{6}$")
#: a camera frame file: <YYYYMMDDhhmmss>_camera_<token>_<ID>.png (other files are not frames)
_CAMERA_FILE = re.compile(r"^\d{14}_camera_[a-z]+_\d+\.png$")
_UNKNOWN = 254  # LUT marker for a colour missing from class_list.json (never a class id)
NPZ_KEYS = {  # role -> key, for the semantic subsets and the sensor-fusion set
    "semantic": {"row": "row", "col": "col", "depth": "depth"},
    "sensor_fusion": {
        "row": "pcloud_attr.row",
        "col": "pcloud_attr.col",
        "depth": "pcloud_attr.depth",
        "valid": "pcloud_attr.valid",
    },
}
BOX_KEYS = ("class", "center", "size", "axis", "rot_angle", "3d_points", "2d_bbox")


@dataclass(frozen=True)
class A2D2Options:
    """Options of ``mtl-data ingest a2d2``."""

    cameras: tuple[str, ...] = field(
        default=("front_center",), metadata={"help": f"camera to convert (repeatable): {', '.join(CAMERAS)}"}
    )
    val_scenes: tuple[str, ...] = field(
        default=(), metadata={"help": "scene folder (e.g. 20180807_145028) whose frames all go to 'val' (repeatable)"}
    )
    val_fraction: float = field(
        default=0.0,
        metadata={
            "range": (0.0, 1.0),
            "help": "fraction of scenes moved to 'val': the round(f x scenes) scenes "
            "with the lowest hash of their name (at least one)",
        },
    )
    max_bus_gap_ms: float = field(
        default=100.0,
        metadata={"help": "no steer label when the nearest bus samples are farther from the camera timestamp"},
    )
    parts: tuple[str, ...] = field(
        default=(), metadata={"help": f"only these parts (repeatable): {', '.join(PARTS)}; default: every part present"}
    )


def _sibling(image: Path, part_root: Path, kind: str, ext: str) -> Path:
    """The file of another kind (lidar, label, label3D) for a camera PNG of the same frame."""
    prefix, _, token, frame_id = image.stem.split("_")
    cam_dir = image.parent.name
    scene = image.parent.parent.parent.name
    return part_root / scene / kind / cam_dir / f"{prefix}_{kind}_{token}_{frame_id}{ext}"


@register_converter
class A2D2Converter(Converter):
    __doc__ = __doc__
    name = "a2d2"
    Options = A2D2Options

    def __init__(self, root: Path, options: A2D2Options | None = None, taxonomy: str = "unified"):
        super().__init__(root, options, taxonomy)
        unknown = [p for p in self.options.parts if p not in PARTS]
        if unknown:
            raise ValueError(f"--parts {', '.join(unknown)}: not an A2D2 part ({', '.join(PARTS)})")
        self.det_classes = class_map("det", "a2d2", taxonomy)
        self.seg_classes = class_map("seg", "a2d2", taxonomy)
        self._cache: dict = {}  # per process: undistortion maps, colour LUT, parsed bus files

    def __getstate__(self):  # workers rebuild the caches (maps and LUT are tens of MB)
        return {**self.__dict__, "_cache": {}}

    # ---- layout --------------------------------------------------------------------------------

    def _parts(self) -> list[str]:
        return [p for p in (self.options.parts or PARTS) if (self.root / p).is_dir()]

    def check_layout(self) -> None:
        tree = f"cams_lidars.json and one or more of {', '.join(f'{p}/' for p in self.options.parts or PARTS)}"
        check_root(self.root, "A2D2", tree)
        if not self._parts():
            raise nothing_found(self.root, "A2D2 part", tree, lambda p: (p / "cams_lidars.json").is_file())
        if not (self.root / "cams_lidars.json").is_file():
            raise LayoutError(f"{self.root / 'cams_lidars.json'}: missing (expected the A2D2 root holding {tree})")
        cameras = self._config()["cameras"]
        for cam in self.options.cameras:
            if cam not in cameras:
                raise LayoutError(
                    f"{self.root / 'cams_lidars.json'}: no camera {cam!r} (cameras: {', '.join(cameras)})"
                )
        if any(self.root.glob("camera_lidar_semantic*/*/label")):
            self._color_lut()  # labels exist: class_list.json must exist and map every class

    def _config(self) -> dict:
        if "config" not in self._cache:
            path = self.root / "cams_lidars.json"
            try:
                self._cache["config"] = json.loads(path.read_text())
            except ValueError as exc:
                raise LayoutError(f"{path}: not valid JSON ({exc})") from None
        return self._cache["config"]

    def _class_list_path(self) -> Path:
        for path in (self.root / "camera_lidar_semantic" / "class_list.json", self.root / "class_list.json"):
            if path.is_file():
                return path
        raise LayoutError(
            f"{self.root / 'camera_lidar_semantic' / 'class_list.json'}: missing (needed to read the label colours)"
        )

    def _color_lut(self) -> np.ndarray:
        """uint8 LUT over packed 24-bit colours -> output seg id (255 ignore, 254 unknown).

        Raises:
            LayoutError: class_list.json is missing, unreadable, or names an unmapped class.
        """
        if "lut" not in self._cache:
            path = self._class_list_path()
            try:
                colors = json.loads(path.read_text())
            except ValueError as exc:
                raise LayoutError(f"{path}: not valid JSON ({exc})") from None
            lut = np.full(1 << 24, _UNKNOWN, dtype=np.uint8)
            for hexcolor, name in colors.items():
                if name not in self.seg_classes.ids:
                    raise LayoutError(
                        f"{path}: class {name!r} has no entry in the A2D2 segmentation table "
                        f"(map it with --taxonomy FILE.json)"
                    )
                cid = self.seg_classes.lookup(name)
                lut[int(hexcolor.lstrip("#"), 16)] = IGNORE_INDEX if cid is None else cid
            self._cache["lut"] = lut
        return self._cache["lut"]

    def class_tables(self) -> dict[str, list[str]]:
        names = list(self.det_classes.names)
        return {"seg": list(self.seg_classes.names), "det2d": names, "det3d": names}

    # ---- listing -------------------------------------------------------------------------------

    def frames(self) -> list[Frame]:
        self.check_layout()
        found: dict[tuple[str, str, str], dict[str, Path]] = {}
        for part in self._parts():
            part_root = self.root / part
            for scene_dir in sorted(p for p in part_root.iterdir() if _SCENE.match(p.name)):
                for cam in self.options.cameras:
                    cam_dir = scene_dir / "camera" / f"cam_{cam}"
                    if not cam_dir.is_dir():
                        continue
                    for image in sorted(p for p in cam_dir.iterdir() if _CAMERA_FILE.match(p.name)):
                        paths = found.setdefault((scene_dir.name, cam, image.stem), {"image": image})
                        paths.setdefault("json", image.with_suffix(".json"))
                        for role, kind, ext in (
                            ("npz", "lidar", ".npz"),
                            ("label", "label", ".png"),
                            ("label3d", "label3D", ".json"),
                        ):
                            path = _sibling(image, part_root, kind, ext)
                            if path.exists():
                                paths.setdefault(role, path)
        buses = self._bus_files()
        scenes = {scene for scene, _, _ in found}
        val = set(self.options.val_scenes) | val_groups(scenes, self.options.val_fraction, salt="a2d2")
        out = []
        for (scene, _cam, stem), paths in sorted(found.items()):
            if scene in buses:
                paths["bus"] = buses[scene]
            prefix, _, token, frame_id = stem.split("_")
            in_val = scene in val
            out.append(Frame(split="val" if in_val else "train", id=f"{prefix}_{token}_{frame_id}", paths=paths))
        return out

    def _bus_files(self) -> dict[str, Path]:
        buses = {}
        for part in BUS_DIRS:
            for path in sorted(self.root.glob(f"{part}/*/bus/*_bus_signals.json")):
                buses.setdefault(path.parent.parent.name, path)
        return buses

    # ---- conversion ----------------------------------------------------------------------------

    def _camera(self, name: str) -> dict:
        return self._config()["cameras"][name]

    def _maps(self, name: str) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
        key = ("maps", name)
        if key not in self._cache:
            self._cache[key] = ag.undistort_maps(self._camera(name))
        return self._cache[key]

    def _bus(self, path: Path) -> BusSignals:
        key = ("bus", path)
        if key not in self._cache:
            self._cache = {k: v for k, v in self._cache.items() if not (isinstance(k, tuple) and k[0] == "bus")}
            self._cache[key] = read_bus_file(path)  # frames come scene by scene: keep one file
        return self._cache[key]

    def convert(self, frame: Frame) -> Sample:
        paths = frame.paths
        cam_name = paths["image"].parent.name[len("cam_") :]
        camera = self._camera(cam_name)
        width, height = (int(v) for v in camera["Resolution"])
        image = read_image(paths["image"], *_image_messages("camera image"))
        if image.shape[:2] != (height, width):
            raise InputError(
                paths["image"],
                f"camera image is {image.shape[1]}x{image.shape[0]}, "
                f"cams_lidars.json says {width}x{height} for {cam_name}",
            )
        (map1, map2), label_map = self._maps(cam_name)
        image = cv2.remap(image, map1, map2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        notes: dict[str, int] = {}

        seg = None
        if "label" in paths:
            label = read_image(paths["label"], *_image_messages("label"))
            if label.shape != (height, width, 3):
                raise InputError(
                    paths["label"],
                    f"label PNG is {label.shape[1]}x{label.shape[0]}, "
                    f"expected {width}x{height} (cams_lidars.json Resolution of {cam_name})",
                )
            ids = self._color_lut().take(_pack_rgb(label))
            unknown = int(np.count_nonzero(ids == _UNKNOWN))
            if unknown:
                ids[ids == _UNKNOWN] = IGNORE_INDEX
                notes["seg_unknown_color_px"] = unknown
            seg = cv2.remap(
                ids, label_map, None, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=IGNORE_INDEX
            )

        depth = _read_depth(paths["npz"], (height, width)) if "npz" in paths else None
        det2d = det3d = None
        if "label3d" in paths:
            det2d, det3d = self._boxes(paths["label3d"])

        timestamp, steer = None, None
        if paths["json"].exists():
            timestamp = _read_timestamp(paths["json"])
            if "bus" in paths:
                steer = steering_at(self._bus(paths["bus"]), timestamp, self.options.max_bus_gap_ms)
                if steer is None:
                    notes["steer_bus_gap"] = 1
            else:
                notes["steer_no_bus_file"] = 1

        scene = paths["image"].parent.parent.parent.name
        return Sample(
            key=make_key(self.name, frame.split, frame.id),
            source=self.name,
            split=frame.split,
            id=frame.id,
            image=image,
            orig_size=(height, width),
            sequence=scene,
            K=np.asarray(camera["CamMatrix"], dtype=np.float64),
            timestamp_us=timestamp,
            seg=seg,
            depth=depth,
            det2d=det2d,
            det3d=det3d,
            steer=steer,
            extra={"camera": cam_name},
            notes=notes,
        )

    def _boxes(self, path: Path) -> tuple[Det2D, Det3D]:
        doc = read_json(path, "label3D file")
        if not isinstance(doc, dict):
            raise InputError(path, 'expected an object of boxes {"box_0": {...}, ...}')
        boxes = []
        for name in sorted(doc, key=lambda k: (len(k), k)):  # box_2 before box_10
            box = doc[name]
            missing = [k for k in BOX_KEYS if k not in box]
            if missing:
                raise InputError(path, f"{name} lacks {', '.join(missing)} (a label3D box has {', '.join(BOX_KEYS)})")
            if box["class"] not in self.det_classes.ids:
                raise InputError(
                    path,
                    f"{name}: unknown class {box['class']!r}; known: {', '.join(self.det_classes.ids)}",
                    hint="map it with --taxonomy FILE.json",
                )
            boxes.append(box)
        ids = [self.det_classes.lookup(b["class"]) for b in boxes]
        keep = [b for b, i in zip(boxes, ids) if i is not None]
        classes = np.array([i for i in ids if i is not None], dtype=np.int64)
        bbox2d = np.array([b["2d_bbox"] for b in boxes], dtype=np.float64).reshape(-1, 4)
        mask = np.array([i is not None for i in ids], dtype=bool)
        names = tuple(b["class"] for b in keep)
        det2d = Det2D(
            boxes=bbox2d[mask],
            classes=classes,
            ignore=bbox2d[~mask],
            truncated=np.array([float(b.get("truncation", 0.0)) for b in keep]),
            native_class=names,
        )
        boxes3d, rotation = ag.a2d2_boxes_to_optical(
            center=np.array([b["center"] for b in keep], dtype=np.float64).reshape(-1, 3),
            size=np.array([b["size"] for b in keep], dtype=np.float64).reshape(-1, 3),
            axis=np.array([b["axis"] for b in keep], dtype=np.float64).reshape(-1, 3),
            angle=np.array([b["rot_angle"] for b in keep], dtype=np.float64),
        )
        rotation = None if geo.is_upright(rotation) else rotation
        return det2d, Det3D(boxes=boxes3d, classes=classes, rotation=rotation, native_class=names)


def _image_messages(what: str) -> tuple[str, str]:
    return f"{what} missing", f"{what} does not decode as an image (truncated or not a PNG?)"


def _read_timestamp(path: Path) -> int:
    doc = read_json(path, "frame json")
    if not isinstance(doc, dict) or "cam_tstamp" not in doc:
        raise InputError(
            path,
            "frame json has no cam_tstamp (camera timestamp, integer microseconds)",
            hint="needed to synchronize the bus signals",
        )
    if not isinstance(doc["cam_tstamp"], int) or isinstance(doc["cam_tstamp"], bool):
        raise InputError(path, f"cam_tstamp {doc['cam_tstamp']!r} is not an integer (microseconds)")
    return doc["cam_tstamp"]


def _pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) uint32 ``r << 16 | g << 8 | b``.

    Via a BGRA copy read as little-endian uint32 (bytes B, G, R, A): one pass in OpenCV instead
    of three int32 temporaries of the full frame.
    """
    bgra = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA)
    return bgra.view("<u4")[..., 0] & np.uint32(0xFFFFFF)


def _read_depth(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Sparse depth image from an A2D2 lidar npz of either key set."""
    try:
        with np.load(path) as npz:
            files = set(npz.files)
            for keys in NPZ_KEYS.values():
                if set(keys.values()) <= files:
                    arrays = {role: npz[key] for role, key in keys.items()}
                    break
            else:
                expected = " or ".join("{" + ", ".join(k.values()) + "}" for k in NPZ_KEYS.values())
                raise InputError(path, f"npz has keys {sorted(files)}, expected {expected}")
    except FileNotFoundError:
        raise InputError(path, "lidar npz missing") from None
    except (OSError, ValueError) as exc:
        raise InputError(path, f"not a readable npz file: {exc}") from None
    keep = np.ones(arrays["depth"].shape, dtype=bool) if "valid" not in arrays else arrays["valid"] != 0
    uv = np.column_stack([arrays["col"][keep], arrays["row"][keep]])
    return geo.rasterize_sparse_depth(uv, arrays["depth"][keep], size)
