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

Frames: any file of a frame (camera PNG, lidar npz, label PNG, label3D json) in any part makes
the frame, so one whose camera image is missing while its LiDAR or labels exist is an error
naming the image (a reject under ``--on-error skip``; KITTI and Cityscapes do the same), never a
frame silently left out. A file in a frame folder that starts like a frame file (14 digits and
``_``) but is not named like one is an error too. Names are matched in ASCII.

Input checks (each an ``InputError`` naming the file and the JSON path of the field, what was
expected and what was found; `schema.jsonshape`): a label3D box has every key of ``BOX_KEYS``
of the shapes of ``BOX_SHAPES`` (numbers finite and within ``jsonshape.MAX_MAGNITUDE``, so the
geometry cannot overflow), positive ``size``, a non-zero ``axis`` and an ordered ``2d_bbox`` (what
the schema check would otherwise reject without naming the field); ``cam_tstamp`` is an integer
in int64 (the manifest's type); the lidar npz is a readable archive (truncated, a lone ``.npy``
or a pickle are errors) whose arrays are 1-D real numbers of one length. ``cams_lidars.json``
(the fields read of each converted camera: ``Resolution``, ``CamMatrix``, ``CamMatrixOriginal``,
``Distortion`` with the lens's number of coefficients, ``Lens``) and ``class_list.json`` serve
every frame, so a bad field in them is a ``LayoutError``: the run stops, also under skip. Keys
that are not read (``id``, ``occlusion``, ``alpha``, ``view``) are not checked.

Splits: A2D2 has no official split; everything is ``train`` unless ``--val-scenes`` or
``--val-fraction`` moves whole scenes to ``val``: exactly round(fraction x scenes), at least one
(never frames of one drive on both sides). A ``--val-scenes`` scene with no frames (of the
converted cameras and parts) is an error listing the scenes found: a typo would leave val empty.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from mtl_data.errors import InputError, LayoutError, MtlDataError
from mtl_data.ingest.a2d2_bus import BusSignals, read_bus_file, steering_at
from mtl_data.ingest.layout import check_root, nothing_found
from mtl_data.ingest.readers import NPZ_ERRORS, read_image, read_json
from mtl_data.ingest.registry import Converter, Frame, register_converter
from mtl_data.ingest.splits import val_groups
from mtl_data.schema import a2d2_geometry as ag
from mtl_data.schema import geometry as geo
from mtl_data.schema import jsonshape as js
from mtl_data.schema.sample import IGNORE_INDEX, Det2D, Det3D, Sample, make_key
from mtl_data.schema.taxonomy import class_map

PARTS = ("camera_lidar_semantic", "camera_lidar_semantic_bboxes", "camera_lidar")
BUS_DIRS = ("camera_lidar_semantic_bus", "camera_lidar")
CAMERAS = ("front_left", "front_right", "front_center", "side_left", "side_right", "rear_center")
_SCENE = re.compile(r"^\d{8}_\d{6}$")
#: a frame's files: role -> (kind folder, extension); the file is <YYYYMMDDhhmmss>_<kind>_<token>_<ID><ext>
FRAME_FILES = {
    "image": ("camera", ".png"),
    "npz": ("lidar", ".npz"),
    "label": ("label", ".png"),
    "label3d": ("label3D", ".json"),
}
_FRAME_FILE = {
    role: re.compile(rf"^([0-9]{{14}})_{kind}_([a-z]+)_([0-9]+){re.escape(ext)}$")
    for role, (kind, ext) in FRAME_FILES.items()
}
#: the camera's frame json, beside its image
_FRAME_JSON = re.compile(r"^[0-9]{14}_camera_[a-z]+_[0-9]+\.json$")
#: a file that starts like a frame file: when it is not one, its name is broken (an error)
_FRAME_LIKE = re.compile(r"^[0-9]{14}_")
_HEX_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")
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
#: what to do about a frame file that does not read
REEXTRACT = "re-extract it from the A2D2 archive, or pass --on-error skip to leave the frame out"
#: a label3D box's fields as read: key -> shape (``truncation`` is optional, 0 when absent)
BOX_SHAPES = {
    "class": js.TEXT,
    "center": js.numbers(3),
    "size": js.numbers(3),
    "axis": js.numbers(3),
    "rot_angle": js.number(),
    "3d_points": js.matrix(8, 3),
    "2d_bbox": js.numbers(4),
}
#: the fields of a cams_lidars.json camera that are read (``Lens`` is optional: pinhole when absent)
CAMERA_SHAPES = {
    "Resolution": js.list_of(js.integer(1), 2),
    "CamMatrix": js.matrix(3, 3),
    "CamMatrixOriginal": js.matrix(3, 3),
}
#: Distortion coefficients: fisheye k1..k4; pinhole as OpenCV takes them (k1 k2 p1 p2 [k3 [k4 k5 k6 [...]]])
DISTORTION_COUNTS = {"Fisheye": (4,), "pinhole": (4, 5, 8, 12, 14)}


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


@register_converter
class A2D2Converter(Converter):
    __doc__ = __doc__
    name = "a2d2"
    Options = A2D2Options
    # The paper: annotations are for non-sequential frames; the public sensor-fusion drives
    # (camera_lidar/) are other scenes (a2d2_to_ros FAQ), so a labelled frame has no public t-1.
    no_previous_frames = "labelled frames are not sequential"

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
            self._camera(cam)  # the fields read of each camera converted are checked once, here
        if any(self.root.glob("camera_lidar_semantic*/*/label")):
            self._color_lut()  # labels exist: class_list.json must exist and map every class

    def _config(self) -> dict:
        """``cams_lidars.json``, checked to be an object with a ``cameras`` object (LayoutError if not)."""
        if "config" not in self._cache:
            path = self.root / "cams_lidars.json"
            try:
                doc = js.check(read_json(path, "sensor configuration"), js.OBJECT, path, "top level")
                js.field(doc, "cameras", js.OBJECT, path)
            except InputError as exc:  # the whole root depends on it: not one frame's problem
                raise LayoutError(str(exc)) from None
            self._cache["config"] = doc
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
                colors = js.check(read_json(path, "class list"), js.OBJECT, path, "top level")
                for hexcolor, name in colors.items():
                    if not _HEX_COLOR.match(hexcolor):
                        raise InputError(path, f'key {hexcolor!r}: expected a colour "#rrggbb" (hex digits)')
                    js.check(name, js.TEXT, path, hexcolor)
            except InputError as exc:  # every label PNG depends on it: not one frame's problem
                raise LayoutError(str(exc)) from None
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
        # Every file of a frame, of any kind and in any part, makes the frame: one whose camera
        # image is missing is listed too, and reported by `convert` (never silently dropped).
        found: dict[tuple[str, str, str], dict[str, Path]] = {}
        for part in self._parts():
            for scene_dir in sorted(p for p in (self.root / part).iterdir() if _SCENE.match(p.name)):
                for cam in self.options.cameras:
                    for role, (kind, _) in FRAME_FILES.items():
                        folder = scene_dir / kind / f"cam_{cam}"
                        if not folder.is_dir():
                            continue
                        for path in sorted(folder.iterdir()):
                            match = _FRAME_FILE[role].match(path.name)
                            if match:
                                prefix, token, frame_id = match.groups()
                                stem = f"{prefix}_camera_{token}_{frame_id}"
                                found.setdefault((scene_dir.name, cam, stem), {}).setdefault(role, path)
                            elif _FRAME_LIKE.match(path.name) and not (
                                role == "image" and _FRAME_JSON.match(path.name)
                            ):
                                # a frame file with a broken name (a copy, a bad byte): an error, not nothing
                                found[(scene_dir.name, cam, str(path))] = {"misnamed": path}
        scenes = sorted({scene for scene, _, _ in found})
        unknown = sorted(set(self.options.val_scenes) - set(scenes))
        if unknown:
            raise MtlDataError(
                f"--val-scenes {', '.join(unknown)}: no such scene with {'/'.join(self.options.cameras)} frames "
                f"in {self.root} (scenes: {', '.join(scenes) or 'none'})"
            )
        buses = self._bus_files()
        val = set(self.options.val_scenes) | val_groups(scenes, self.options.val_fraction, salt="a2d2")
        out = []
        for (scene, cam, stem), files in sorted(found.items()):
            split = "val" if scene in val else "train"
            if "misnamed" in files:
                name = os.fsencode(files["misnamed"].name).decode("ascii", "backslashreplace")
                out.append(Frame(split=split, id=f"{scene}_{cam}_{name}", paths=files))
                continue
            any_file = next(iter(files.values()))  # <part>/<scene>/<kind>/cam_<cam>/<file>
            image = files.get("image", any_file.parents[2] / "camera" / f"cam_{cam}" / f"{stem}.png")
            paths = {"image": image, "json": image.with_suffix(".json")}  # image first: the frame's primary path
            paths.update((role, path) for role, path in files.items() if role != "image")
            if scene in buses:
                paths["bus"] = buses[scene]
            prefix, _, token, frame_id = stem.split("_")
            out.append(Frame(split=split, id=f"{prefix}_{token}_{frame_id}", paths=paths))
        return out

    def _bus_files(self) -> dict[str, Path]:
        buses = {}
        for part in BUS_DIRS:
            for path in sorted(self.root.glob(f"{part}/*/bus/*_bus_signals.json")):
                buses.setdefault(path.parent.parent.name, path)
        return buses

    # ---- conversion ----------------------------------------------------------------------------

    def _camera(self, name: str) -> dict:
        """The fields read of a ``cams_lidars.json`` camera, checked (`CAMERA_SHAPES`, ``Distortion``, ``Lens``).

        Raises:
            LayoutError: naming the file, the field (``cameras.front_center.CamMatrix``), what
                was expected and what was found.
        """
        key = ("camera", name)
        if key not in self._cache:
            path, where = self.root / "cams_lidars.json", f"cameras.{name}"
            try:
                raw = js.check(self._config()["cameras"][name], js.OBJECT, path, where)
                camera = {k: js.field(raw, k, shape, path, where) for k, shape in CAMERA_SHAPES.items()}
                camera["Lens"] = js.field(raw, "Lens", js.TEXT, path, where, default="Telecam")
                # nested, [[k1, k2, ...]], in the real file; a flat list is accepted too
                dist = js.field(raw, "Distortion", js.LIST, path, where)
                dist = dist[0] if len(dist) == 1 and isinstance(dist[0], list) else dist
                counts = DISTORTION_COUNTS["Fisheye" if camera["Lens"] == "Fisheye" else "pinhole"]
                camera["Distortion"] = js.check(dist, js.numbers(counts), path, f"{where}.Distortion")
            except InputError as exc:  # every frame of the camera depends on it
                raise LayoutError(str(exc)) from None
            self._cache[key] = camera
        return self._cache[key]

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
        if "misnamed" in paths:
            kind = paths["misnamed"].parent.parent.name
            raise InputError(
                paths["misnamed"],
                f"not a frame file name: expected <YYYYMMDDhhmmss>_{kind}_<camera token>_<ID>"
                f"{paths['misnamed'].suffix} in ASCII digits and letters",
                hint="rename it, or move it out of the dataset folder",
            )
        cam_name = paths["image"].parent.name[len("cam_") :]
        camera = self._camera(cam_name)
        width, height = (int(v) for v in camera["Resolution"])
        if not paths["image"].exists():
            others = [FRAME_FILES[role][0] for role in FRAME_FILES if role != "image" and role in paths]
            raise InputError(
                paths["image"],
                f"camera image missing, but the frame has {' and '.join(others)} files",
                hint="extract the camera images of this part, or pass --on-error skip to leave such frames out",
            )
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
            det2d, det3d = self.label3d_to_boxes(paths["label3d"], read_json(paths["label3d"], "label3D file"))

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

    def label3d_to_boxes(self, path: Path, doc: object) -> tuple[Det2D, Det3D]:
        """``det2d`` and ``det3d`` of a parsed label3D file (``path`` names it in errors).

        Raises:
            InputError: the document does not fit `parse_label3d`, or a box has a class
                missing from the taxonomy.
        """
        boxes = parse_label3d(path, doc)
        for box in boxes:
            if box["class"] not in self.det_classes.ids:
                raise InputError(
                    path,
                    f"{box['name']}: unknown class {box['class']!r}; known: {', '.join(self.det_classes.ids)}",
                    hint="map it with --taxonomy FILE.json",
                )
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
            truncated=np.array([b["truncation"] for b in keep], dtype=np.float64),
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


def parse_label3d(path: Path, doc: object) -> list[dict]:
    """The boxes of a parsed label3D document, every field read checked, in box order.

    Each box is an object with every key of `BOX_KEYS`, of the shapes of `BOX_SHAPES`, and an
    optional ``truncation`` number; ``size`` is positive, ``axis`` not zero and ``2d_bbox``
    ordered (``x1 <= x2``, ``y1 <= y2``). Other keys (``id``, ``occlusion``, ``alpha``) are not
    read, so not checked. ``3d_points`` is not used (the corners follow from the other fields)
    but required and checked, as a label3D box always has it.

    Returns:
        Per box (``box_2`` before ``box_10``): ``name``, ``class`` (str), ``truncation`` (float)
        and the other `BOX_SHAPES` fields as float64 arrays.

    Raises:
        InputError: naming the box and field (``box_3.2d_bbox``), what was expected and what was found.
    """
    if not isinstance(doc, dict):
        raise InputError(path, f'expected an object of boxes {{"box_0": {{...}}, ...}}, found {js.describe(doc)}')
    boxes = []
    for name in sorted(doc, key=lambda k: (len(k), k)):  # box_2 before box_10
        box = js.check(doc[name], js.OBJECT, path, name, hint=REEXTRACT)
        missing = [k for k in BOX_KEYS if k not in box]
        if missing:
            raise InputError(path, f"{name} lacks {', '.join(missing)} (a label3D box has {', '.join(BOX_KEYS)})")
        parsed = {"name": name}
        parsed.update((k, js.field(box, k, shape, path, name, hint=REEXTRACT)) for k, shape in BOX_SHAPES.items())
        parsed["truncation"] = js.field(box, "truncation", js.number(), path, name, default=0.0, hint=REEXTRACT)
        if not (parsed["size"] > 0).all():
            raise InputError(path, f"{name}.size {parsed['size'].tolist()}: expected 3 positive lengths [l, w, h] (m)")
        if not np.abs(parsed["axis"]).max() > 1e-6:  # normalised by the conversion
            raise InputError(path, f"{name}.axis {parsed['axis'].tolist()}: expected a rotation axis, not zero")
        x1, y1, x2, y2 = parsed["2d_bbox"]
        if not (x1 <= x2 and y1 <= y2):
            raise InputError(
                path, f"{name}.2d_bbox {parsed['2d_bbox'].tolist()}: expected [x1, y1, x2, y2] with x1 <= x2, y1 <= y2"
            )
        boxes.append(parsed)
    return boxes


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
    # int64 range: the manifest stores it as such
    return js.field(doc, "cam_tstamp", js.integer(0, np.iinfo(np.int64).max), path, hint="the camera time in µs")


def _pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) uint32 ``r << 16 | g << 8 | b``.

    Via a BGRA copy read as little-endian uint32 (bytes B, G, R, A): one pass in OpenCV instead
    of three int32 temporaries of the full frame.
    """
    bgra = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA)
    return bgra.view("<u4")[..., 0] & np.uint32(0xFFFFFF)


def _read_depth(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Sparse depth image from an A2D2 lidar npz of either key set (`NPZ_KEYS`).

    Raises:
        InputError: the file is missing, not an npz archive (truncated, a single ``.npy``, a
            pickle), lacks the keys of both sets, or one of them does not read as a 1-D array
            of real numbers of the same length as the others.
    """
    keys, arrays = _read_npz(path)
    n = len(arrays["depth"]) if arrays["depth"].ndim == 1 else -1
    for role, array in arrays.items():
        if array.ndim != 1 or len(array) != n or array.dtype.kind not in "biuf":
            raise InputError(
                path,
                f"array {keys[role]!r} is {array.dtype} {array.shape}; expected 1-D real numbers, "
                f"one per point like {keys['depth']!r} ({arrays['depth'].shape})",
            )
    keep = np.ones(n, dtype=bool) if "valid" not in arrays else arrays["valid"] != 0
    uv = np.column_stack([arrays["col"][keep], arrays["row"][keep]])
    return geo.rasterize_sparse_depth(uv, arrays["depth"][keep], size)


def _read_npz(path: Path) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """The point arrays of a lidar npz: the key set it has (a value of `NPZ_KEYS`) and role -> array.

    Like ``readers.read_npz`` but decompressing only the 3-4 arrays used of the 9-11 a scan holds
    (a third of the time on the real front-center scan).
    """
    try:
        with open(path, "rb") as fh:  # our own handle: np.load leaks its one when the archive is corrupt
            npz = np.load(fh)
            if not isinstance(npz, np.lib.npyio.NpzFile):
                raise InputError(path, "is a single .npy array, expected an npz archive of named arrays")
            with npz:
                keys = next((k for k in NPZ_KEYS.values() if set(k.values()) <= set(npz.files)), None)
                if keys is None:
                    expected = " or ".join("{" + ", ".join(k.values()) + "}" for k in NPZ_KEYS.values())
                    raise InputError(path, f"npz has keys {sorted(npz.files)}, expected {expected}")
                return keys, {role: npz[key] for role, key in keys.items()}
    except FileNotFoundError:
        raise InputError(path, "lidar npz missing") from None
    except NPZ_ERRORS as exc:
        raise InputError(path, f"not a readable npz file ({type(exc).__name__}: {exc})", hint="re-extract it") from None
