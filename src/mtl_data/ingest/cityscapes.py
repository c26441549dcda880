"""Cityscapes (+ Cityscapes-3D) -> semantic segmentation, stereo depth, 2D and 3D vehicle boxes.

Native layout (whichever packages were downloaded, unpacked side by side; ``<id>`` is
``<city>_<seq:06d>_<frame:06d>``)::

    RAW_ROOT/
      leftImg8bit/{train,val,test}/<city>/<id>_leftImg8bit.png   8-bit RGB (2048x1024)   [required]
      gtFine/{train,val}/<city>/<id>_gtFine_labelIds.png        uint8 label ids 0..33 (test: placeholders)
      disparity/{train,val,test}/<city>/<id>_disparity.png      uint16, 256 d + 1, 0 = invalid
      camera/{train,val,test}/<city>/<id>_camera.json           intrinsic fx, fy, u0, v0; extrinsic baseline ...
      gtBbox3d/{train,val}/<city>/<id>_gtBbox3d.json            Cityscapes-3D boxes + sensor block
      leftImg8bit/train_extra/..., disparity/train_extra/...    only with --train-extra
      leftImg8bit/demoVideo/...                                 never converted (no labels)
      leftImg8bit_sequence/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
                                                                the snippets around each frame (17 Hz):
                                                                read only with --prev-frames [optional]

``disparity/<split>/`` needs ``camera/<split>/`` next to it. Other files (``_gtFine_instanceIds``,
``_color``, ``_polygons.json``, ``gtCoarse``, ``vehicle``, ``timestamp``) are not read.

A frame is every ``<id>`` found under any of these folders (a label without its image is an
error, not skipped); a sample has the tasks whose files exist for it. Per frame:

* ``seg``: labelIds through the official label table (train ids = the unified classes, 255
  ignore); a label id outside 0..33 is an error.
* ``depth``: ``baseline * fx / d`` with ``d = (p - 1) / 256`` and baseline, fx from the camera
  json; ``p = 0`` and ``p = 1`` (d = 0, infinitely far) are no measurement; depths beyond
  255.996 m are clipped to it (counted as ``notes.depth_clipped_px``).
* ``det2d``: gtBbox3d ``2d.modal`` -> boxes, ``2d.amodal`` -> amodal, ``[x, y, w, h]`` ->
  ``[x, y, x + w, y + h]`` (cityscapesScripts' own conversion); the file's ``ignore`` list ->
  ignore regions.
* ``det3d``: centre and quaternion from V (ISO 8855) through ``sensor_T_ISO_8855`` to the camera
  and optical frames; yaw derived, the full rotation kept (the camera's pitch tilts every box).
* ``K`` from the camera json, else from the gtBbox3d ``sensor`` block.
* ``meta.json`` key ``sensor_T_ISO_8855``: the 3x4 V -> C transform (rows of 4 numbers) the 3D
  boxes were converted through, from the gtBbox3d ``sensor`` block, else derived from the camera
  json ``extrinsic`` (``x, y, z, yaw, pitch, roll``; the two agree exactly on the real sample);
  absent when neither gives it. Exporters need it to write predictions back in V.
* ``prev1`` .. ``prevN`` (``--prev-frames N``): t-k is frame number F-k of the frame's
  ``<city>_<seq>_<F>`` in ``leftImg8bit_sequence/`` (F is not always 19: some cities were
  recorded as long sequences, e.g. ``frankfurt_000000_000294``); a missing file is no previous
  frame.

Input checks: the fields read of the gtBbox3d and camera jsons are checked for type, length
and finite value within ``jsonshape.MAX_MAGNITUDE`` (`parse_gtbbox3d`, `parse_camera_json`),
each error naming the file and the JSON path (``objects[2].3d.center``), what was expected and
what was found. A file of a frame's name replaced by a folder is listed and reported, not skipped.

Splits: ``train``, ``val``, ``test`` as the folders say. Test labels are withheld by the
benchmark (its gtFine images mark only the ego vehicle and the rectification border), so test
samples get no ``seg``/``det2d``/``det3d``, only depth and ``K``. ``train_extra`` (coarse labels
only, not read) goes to ``train`` with ``--train-extra``; ``demoVideo`` is never converted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from mtl_data.errors import InputError, LayoutError
from mtl_data.ingest.layout import check_root, missing_folder, nothing_found
from mtl_data.ingest.readers import read_file, read_image, read_json
from mtl_data.ingest.registry import Converter, Frame, register_converter
from mtl_data.schema import cityscapes_geometry as cg
from mtl_data.schema import geometry as geo
from mtl_data.schema import jsonshape as js
from mtl_data.schema.sample import IGNORE_INDEX, Det2D, Det3D, Sample, make_key
from mtl_data.schema.taxonomy import CITYSCAPES_LABEL_IDS, class_map

SPLITS = ("train", "val", "test")
#: native split folder -> output split (train_extra only with --train-extra).
OUTPUT_SPLIT = {"train": "train", "val": "val", "test": "test", "train_extra": "train"}
#: role -> (package folder, file suffix after the frame id)
ROLES = {
    "image": ("leftImg8bit", "_leftImg8bit.png"),
    "label": ("gtFine", "_gtFine_labelIds.png"),
    "disparity": ("disparity", "_disparity.png"),
    "camera": ("camera", "_camera.json"),
    "boxes": ("gtBbox3d", "_gtBbox3d.json"),
}
#: the ``leftImg8bit_sequence`` package: the snippet of 30 frames around each labelled one
SEQUENCE_FOLDER = "leftImg8bit_sequence"
#: roles holding annotations, which the benchmark withholds for test
LABEL_ROLES = ("label", "boxes")
_FRAME_ID = re.compile(r"^(?P<city>.+)_(?P<seq>\d{6})_(?P<frame>\d{6})$")
SENSOR_KEYS = ("sensor_T_ISO_8855", "fx", "fy", "u0", "v0")
OBJECT_KEYS = "2d.amodal, 3d.center, 3d.dimensions, 3d.rotation and label"
#: the camera json and gtBbox3d sensor intrinsics of one frame may differ by this much (px)
K_TOLERANCE_PX = 1e-3
TREE = (
    "leftImg8bit/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png plus any of "
    "gtFine/, disparity/ with camera/, gtBbox3d/"
)


@dataclass(frozen=True)
class CityscapesOptions:
    """Options of ``mtl-data ingest cityscapes``."""

    train_extra: bool = field(
        default=False,
        metadata={
            "help": "also convert leftImg8bit/train_extra (19,998 frames with coarse labels only: they get "
            "depth from disparity and K, no seg) into the 'train' split"
        },
    )


@register_converter
class CityscapesConverter(Converter):
    __doc__ = __doc__
    name = "cityscapes"
    Options = CityscapesOptions
    no_previous_frames = None

    def __init__(self, root: Path, options: CityscapesOptions | None = None, taxonomy: str = "unified"):
        super().__init__(root, options, taxonomy)
        self.seg_classes = class_map("seg", "cityscapes", taxonomy)
        self.det_classes = class_map("det", "cityscapes", taxonomy)
        # label id -> output seg id, vectorised; ids outside 0..33 are caught before the lookup
        self.seg_lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
        for label_id, name in CITYSCAPES_LABEL_IDS.items():
            cid = self.seg_classes.lookup(name)
            self.seg_lut[label_id] = IGNORE_INDEX if cid is None else cid

    # ---- layout --------------------------------------------------------------------------------

    def _native_splits(self) -> tuple[str, ...]:
        return (*SPLITS, "train_extra") if self.options.train_extra else SPLITS

    def check_layout(self) -> None:
        self._splits_to_convert()

    def _splits_to_convert(self) -> list[str]:
        """Check the tree; return the native split folders of ``leftImg8bit`` to convert.

        Raises:
            LayoutError: naming the missing folder and the expected tree.
        """
        root = self.root
        check_root(root, "Cityscapes", TREE)
        images = root / "leftImg8bit"
        if not images.is_dir():
            raise nothing_found(root, "leftImg8bit folder", TREE, lambda p: (p / "leftImg8bit").is_dir())
        splits = [s for s in self._native_splits() if (images / s).is_dir()]
        if not splits:
            found = sorted(p.name for p in images.iterdir() if p.is_dir())
            extra = "; train_extra is converted only with --train-extra" if "train_extra" in found else ""
            raise LayoutError(
                f"{images}: no split folder to convert (expected {', '.join(self._native_splits())}; "
                f"found: {', '.join(found) or 'nothing'}; demoVideo is never converted){extra}"
            )
        for split in splits:
            if (root / "disparity" / split).is_dir() and not (root / "camera" / split).is_dir():
                raise missing_folder(
                    root / "camera" / split,
                    f"disparity/{split} needs the camera json of each frame for its baseline and fx: "
                    "the camera package",
                )
        return splits

    def class_tables(self) -> dict[str, list[str]]:
        names = list(self.det_classes.names)
        return {"seg": list(self.seg_classes.names), "det2d": names, "det3d": names}

    # ---- listing -------------------------------------------------------------------------------

    def frames(self) -> list[Frame]:
        out = []
        for native in self._splits_to_convert():
            roles = {r: v for r, v in ROLES.items() if not (native == "test" and r in LABEL_ROLES)}
            found: dict[str, dict[str, Path]] = {}
            for role, (package, suffix) in roles.items():
                split_dir = self.root / package / native
                if not split_dir.is_dir():
                    continue
                for city in sorted(p for p in split_dir.iterdir() if p.is_dir()):
                    for path in sorted(city.iterdir()):
                        if path.name.endswith(suffix):  # a folder in its place is reported by convert
                            found.setdefault(path.name[: -len(suffix)], {})[role] = path
            # The union of ids: a label without its image is an error to report, not to skip.
            for frame_id in sorted(found):
                have = found[frame_id]
                city = next(iter(have.values())).parent.name
                paths = {"image": self.root / "leftImg8bit" / native / city / f"{frame_id}_leftImg8bit.png"}
                paths.update({r: p for r, p in have.items() if r != "image"})
                if "disparity" in paths and "camera" not in paths:  # reported by convert, naming it
                    paths["camera"] = self.root / "camera" / native / city / f"{frame_id}_camera.json"
                out.append(Frame(split=OUTPUT_SPLIT[native], id=frame_id, paths=paths))
        return out

    def previous_frame_paths(self, frame: Frame, count: int) -> list[Path]:
        match = _FRAME_ID.match(frame.id)
        if match is None:  # convert reports the malformed name
            return []
        image = frame.paths["image"]  # leftImg8bit/<split>/<city>/<id>_leftImg8bit.png
        folder = self.root / SEQUENCE_FOLDER / image.parent.parent.name / image.parent.name
        number = int(match["frame"])
        return [
            folder / f"{match['city']}_{match['seq']}_{number - k:06d}_leftImg8bit.png"
            for k in range(1, count + 1)
            if number - k >= 0
        ]

    # ---- conversion ----------------------------------------------------------------------------

    def convert(self, frame: Frame) -> Sample:
        paths = frame.paths
        match = _FRAME_ID.match(frame.id)
        if match is None or match["city"] != paths["image"].parent.name:
            raise InputError(
                paths["image"],
                f"file name does not follow <city>_<seq>_<frame>_leftImg8bit.png "
                f"with the city of its folder ({paths['image'].parent.name!r})",
            )
        image = read_image(
            paths["image"],
            "leftImg8bit image missing for this frame (its labels exist)",
            "leftImg8bit image does not decode as an image (truncated or not a PNG?)",
        )
        h, w = image.shape[:2]
        notes: dict[str, int] = {}

        camera = _read_camera(paths["camera"], need_baseline="disparity" in paths) if "camera" in paths else None
        boxes_doc = _read_boxes_json(paths["boxes"], (h, w)) if "boxes" in paths else None
        K = None if camera is None else camera["K"]
        # V -> C of the frame, kept so that predictions can be written back in V (the benchmark's
        # frame): the gtBbox3d one the boxes were converted through, else the camera json pose.
        sensor_T = boxes_doc["sensor_T"] if boxes_doc is not None else (camera or {}).get("sensor_T")
        extra = {} if sensor_T is None else {"sensor_T_ISO_8855": np.asarray(sensor_T, dtype=np.float64).tolist()}
        if boxes_doc is not None:
            if K is None:
                K = boxes_doc["K"]
            elif not np.allclose(K, boxes_doc["K"], rtol=0, atol=K_TOLERANCE_PX):
                # the 2D boxes were drawn with the sensor block: both must describe the stored image
                raise InputError(
                    paths["boxes"],
                    f"sensor intrinsics (fx, fy, u0, v0 = {_kvals(boxes_doc['K'])}) "
                    f"differ from the camera json {paths['camera'].name} ({_kvals(K)})",
                )

        seg = self._seg(paths["label"], (h, w)) if "label" in paths else None
        depth = None
        if "disparity" in paths:
            depth, clipped = _depth(paths["disparity"], (h, w), camera["baseline"], camera["K"][0, 0])
            if clipped:
                notes["depth_clipped_px"] = clipped
        det2d = det3d = None
        if boxes_doc is not None:
            det2d, det3d = self._boxes(paths["boxes"], boxes_doc)

        return Sample(
            key=make_key(self.name, frame.split, frame.id),
            source=self.name,
            split=frame.split,
            id=frame.id,
            image=image,
            orig_size=(h, w),
            sequence=f"{match['city']}_{match['seq']}",
            K=K,
            seg=seg,
            depth=depth,
            det2d=det2d,
            det3d=det3d,
            extra=extra,
            notes=notes,
        )

    def _seg(self, path: Path, size: tuple[int, int]) -> np.ndarray:
        label = _read_png(path, "labelIds PNG")
        if label.dtype != np.uint8 or label.ndim != 2:
            raise InputError(path, f"labelIds PNG is {_describe(label)}; expected 8-bit single-channel label ids 0..33")
        if label.shape != size:
            raise InputError(
                path,
                f"labelIds PNG is {label.shape[1]}x{label.shape[0]}, expected "
                f"{size[1]}x{size[0]} (the size of its leftImg8bit image)",
            )
        if label.max() >= len(CITYSCAPES_LABEL_IDS):
            counts = np.bincount(label.ravel(), minlength=256)
            unknown = np.flatnonzero(counts[len(CITYSCAPES_LABEL_IDS) :])
            value = int(unknown[0]) + len(CITYSCAPES_LABEL_IDS)
            row, col = (int(v) for v in np.argwhere(label == value)[0])
            others = f" (and {unknown.size - 1} other unknown ids)" if unknown.size > 1 else ""
            raise InputError(
                path,
                f"label id {value} ({int(counts[value])} px, first at row {row}, col {col}){others} "
                f"is not a Cityscapes label id (expected 0..{len(CITYSCAPES_LABEL_IDS) - 1}, "
                "cityscapesScripts helpers/labels.py)",
            )
        return cv2.LUT(label, self.seg_lut)

    def _boxes(self, path: Path, doc: dict) -> tuple[Det2D, Det3D]:
        objects = doc["objects"]
        for i, obj in enumerate(objects):
            if obj["label"] not in self.det_classes.ids:
                raise InputError(
                    path, f"objects[{i}]: unknown label {obj['label']!r} (known: {', '.join(self.det_classes.ids)})"
                )
        ids = [self.det_classes.lookup(o["label"]) for o in objects]
        keep = np.array([i is not None for i in ids], dtype=bool)
        classes = np.array([i for i in ids if i is not None], dtype=np.int64)
        names = tuple(o["label"] for o, i in zip(objects, ids) if i is not None)
        modal = np.array([o["modal"] for o in objects], dtype=np.float64).reshape(-1, 4)
        amodal = np.array([o["amodal"] for o in objects], dtype=np.float64).reshape(-1, 4)
        # An object mapped to ignore (by a taxonomy file) becomes an ignore region of its full extent.
        ignore = np.concatenate([doc["ignore"], amodal[~keep]])
        det2d = Det2D(
            boxes=modal[keep],
            classes=classes,
            ignore=ignore,
            amodal=amodal[keep],
            truncated=np.array([o["truncation"] for o, k in zip(objects, keep) if k], dtype=np.float64),
            native_class=names,
        )
        kept = [o for o, k in zip(objects, keep) if k]
        boxes3d, rotation = cg.vehicle_boxes_to_optical(
            center=np.array([o["center"] for o in kept], dtype=np.float64).reshape(-1, 3),
            dimensions=np.array([o["dimensions"] for o in kept], dtype=np.float64).reshape(-1, 3),
            rotation_wxyz=np.array([o["rotation"] for o in kept], dtype=np.float64).reshape(-1, 4),
            sensor_T_iso=doc["sensor_T"],
        )
        rotation = None if geo.is_upright(rotation) else rotation
        return det2d, Det3D(boxes=boxes3d, classes=classes, rotation=rotation, native_class=names)


# ---- readers (each raises InputError naming its file) -----------------------------------------------


def _read_png(path: Path, what: str) -> np.ndarray:
    """The PNG's values as stored (8 or 16 bit, any channels)."""
    data = read_file(path, f"{what} missing")
    try:  # OpenCV asserts on an empty buffer instead of returning None
        array = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    except cv2.error:
        array = None
    if array is None:
        raise InputError(path, f"{what} does not decode as an image (truncated or not a PNG?)")
    return array


def _describe(array: np.ndarray) -> str:
    bits = {np.dtype(np.uint8): "8-bit", np.dtype(np.uint16): "16-bit"}.get(array.dtype, str(array.dtype))
    channels = 1 if array.ndim == 2 else array.shape[2]
    return f"{bits} with {channels} channel{'s' if channels > 1 else ''}"


def _numbers(value, count: int, path: Path, where: str) -> list[float]:
    """``count`` finite numbers of a JSON list, or an InputError naming ``where`` (`jsonshape.numbers`)."""
    return js.check(value, js.numbers(count), path, where).tolist()


def _number(doc: dict, key: str, path: Path, where: str) -> float:
    """The finite number ``doc[key]``, or an InputError naming ``where.key`` (`jsonshape.number`)."""
    return js.field(doc, key, js.number(), path, where)


def _box_xywh(value, path: Path, where: str) -> list[float]:
    """A 2D box ``[x, y, w, h]`` (w, h >= 0) of a gtBbox3d file, as ``[x1, y1, x2, y2]``."""
    box = _numbers(value, 4, path, where)
    if box[2] < 0 or box[3] < 0:
        raise InputError(path, f"{where} {box}: expected [x, y, w, h] with w >= 0 and h >= 0")
    return _xywh_to_xyxy(box)


def _kvals(K: np.ndarray) -> str:
    return ", ".join(f"{v:g}" for v in (K[0, 0], K[1, 1], K[0, 2], K[1, 2]))


#: camera json ``extrinsic`` keys of the camera pose in V (``extrinsic_to_sensor_T``).
POSE_KEYS = ("x", "y", "z", "yaw", "pitch", "roll")


def _read_camera(path: Path, need_baseline: bool) -> dict:
    """`parse_camera_json` of the camera json at ``path``."""
    if not path.is_file():
        raise InputError(
            path,
            "camera json missing for this frame"
            + (": its disparity needs the baseline and fx" if need_baseline else ""),
            hint="the camera package belongs with disparity",
        )
    return parse_camera_json(path, read_json(path, "camera json", "camera json missing for this frame"), need_baseline)


def parse_camera_json(path: Path, doc: object, need_baseline: bool) -> dict:
    """``{"K": (3, 3), "baseline": metres or None, "sensor_T": (3, 4) or None}`` of a parsed camera json.

    ``intrinsic.{fx, fy, u0, v0}`` are required finite numbers; ``extrinsic.baseline`` too when
    ``need_baseline`` (positive, as fx). ``sensor_T`` is derived from the ``extrinsic`` pose when
    it has all of ``POSE_KEYS``, else None (the pose is optional: nothing else needs it); a pose
    key that is there must be a finite number.

    Raises:
        InputError: naming the field (``intrinsic.fx``), what was expected and what was found.
    """
    intrinsic = doc.get("intrinsic") if isinstance(doc, dict) else None
    if not isinstance(intrinsic, dict):
        raise InputError(path, 'camera json has no "intrinsic" object (fx, fy, u0, v0)')
    K = cg.intrinsics(*(_number(intrinsic, k, path, "intrinsic") for k in ("fx", "fy", "u0", "v0")))
    baseline = None
    if need_baseline:
        extrinsic = doc.get("extrinsic")
        if not isinstance(extrinsic, dict) or "baseline" not in extrinsic:
            raise InputError(path, 'camera json has no "extrinsic.baseline" (metres), needed for the disparity')
        baseline = _number(extrinsic, "baseline", path, "extrinsic")
        if baseline <= 0 or K[0, 0] <= 0:
            raise InputError(path, f"baseline {baseline:g} m and fx {K[0, 0]:g} px must be positive")
    extrinsic = doc.get("extrinsic")
    if extrinsic is not None and not isinstance(extrinsic, dict):
        raise InputError(
            path, f"extrinsic: expected an object (baseline, x, y, z, yaw, pitch, roll), found {js.describe(extrinsic)}"
        )
    pose = [_number(extrinsic, k, path, "extrinsic") for k in POSE_KEYS if k in extrinsic] if extrinsic else []
    sensor_T = cg.extrinsic_to_sensor_T(*pose) if len(pose) == len(POSE_KEYS) else None
    return {"K": K, "baseline": baseline, "sensor_T": sensor_T}


def _depth(path: Path, size: tuple[int, int], baseline: float, fx: float) -> tuple[np.ndarray, int]:
    """Quantized depth (metres, 0 = none) of a disparity PNG, and how many pixels were clipped."""
    values = _read_png(path, "disparity PNG")
    if values.dtype != np.uint16 or values.ndim != 2:
        raise InputError(
            path,
            f"disparity PNG is {_describe(values)}; expected 16-bit single-channel "
            "(value = 256 x disparity + 1, 0 = invalid)",
        )
    if values.shape != size:
        raise InputError(
            path,
            f"disparity PNG is {values.shape[1]}x{values.shape[0]}, expected "
            f"{size[1]}x{size[0]} (the size of its leftImg8bit image)",
        )
    # Depth of every possible PNG value, then one lookup per pixel (a third of the cost of
    # converting the 2M pixels of a frame one by one).
    table = cg.disparity_to_depth(cg.disparity_from_png(np.arange(1 << 16)), baseline, fx)
    clipped = int(np.count_nonzero((table > geo.MAX_DEPTH_M)[values]))
    return geo.quantize_depth(table)[values], clipped


def _read_boxes_json(path: Path, size: tuple[int, int]) -> dict:
    """`parse_gtbbox3d` of the gtBbox3d json at ``path``."""
    return parse_gtbbox3d(path, read_json(path, "gtBbox3d json", "gtBbox3d json missing for this frame"), size)


def parse_gtbbox3d(path: Path, doc: object, size: tuple[int, int]) -> dict:
    """A parsed gtBbox3d json checked and reduced to plain lists: objects, ignore regions, sensor.

    Checked: ``imgWidth`` x ``imgHeight`` equal ``size`` (rows, cols) of the image; ``sensor``
    holds ``sensor_T_ISO_8855`` (3 rows of 4 numbers) and ``fx, fy, u0, v0``; each object has
    ``2d.amodal`` (``2d.modal`` optional) as ``[x, y, w, h]`` with w, h >= 0, ``3d.center``,
    ``3d.dimensions`` (positive), ``3d.rotation`` (a quaternion of norm near 1), a string
    ``label`` and an optional ``truncation`` number; ``ignore`` (optional) is a list of
    ``{"2d": [x, y, w, h]}``. Every number finite and within ``jsonshape.MAX_MAGNITUDE``.
    Keys not read (``occlusion``, ``score``, ``3d.type`` ...) are not checked.

    Raises:
        InputError: naming the field (``objects[2].3d.center``), what was expected and what was found.
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("objects"), list):
        raise InputError(path, 'expected an object with "imgWidth", "imgHeight", "sensor" and an "objects" list')
    height, width = size
    if (doc.get("imgWidth"), doc.get("imgHeight")) != (width, height):
        raise InputError(
            path,
            f"imgWidth x imgHeight is {doc.get('imgWidth')}x{doc.get('imgHeight')}, but its "
            f"leftImg8bit image is {width}x{height}",
        )
    sensor = doc.get("sensor")
    if not isinstance(sensor, dict) or any(k not in sensor for k in SENSOR_KEYS):
        lacks = (
            "no 'sensor' block"
            if not isinstance(sensor, dict)
            else f"'sensor' lacks {', '.join(k for k in SENSOR_KEYS if k not in sensor)}"
        )
        raise InputError(
            path, f"{lacks} ({', '.join(SENSOR_KEYS)}): needed to bring the 3D boxes into the camera frame"
        )
    T = js.field(sensor, "sensor_T_ISO_8855", js.matrix(3, 4), path, "sensor")
    K = cg.intrinsics(*(_number(sensor, k, path, "sensor") for k in ("fx", "fy", "u0", "v0")))

    objects = []
    for i, obj in enumerate(doc["objects"]):
        where = f"objects[{i}]"
        if not isinstance(obj, dict):
            raise InputError(path, f"{where} is not an object")
        label = obj.get("label", "no label")  # quoted unless a plain name: the error stays one line
        what = f"{where} ({label if isinstance(label, str) and label.isprintable() else js.quote(label)}" + (
            f", instanceId {js.quote(obj['instanceId'])})" if "instanceId" in obj else ")"
        )
        two, three = obj.get("2d"), obj.get("3d")
        lacks = [
            k
            for k, ok in (
                ("2d", isinstance(two, dict) and "amodal" in two),
                ("3d", isinstance(three, dict)),
                ("label", isinstance(obj.get("label"), str)),
            )
            if not ok
        ]
        if not lacks:
            lacks = [f"3d.{k}" for k in ("center", "dimensions", "rotation") if k not in three]
        if lacks:
            raise InputError(
                path, f"{what} lacks {', '.join(repr(k) for k in lacks)} (each object needs {OBJECT_KEYS})"
            )
        if three.get("format", "CRS_ISO8855") != "CRS_ISO8855":
            raise InputError(path, f"{what}: 3d.format {three['format']!r} is not supported (expected CRS_ISO8855)")
        amodal = _box_xywh(two["amodal"], path, f"{where}.2d.amodal")
        # Like cityscapesScripts' CsBbox2d: a file with only amodal boxes has modal = amodal.
        modal = _box_xywh(two["modal"], path, f"{where}.2d.modal") if "modal" in two else amodal
        dims = _numbers(three["dimensions"], 3, path, f"{where}.3d.dimensions")
        quat = _numbers(three["rotation"], 4, path, f"{where}.3d.rotation")
        if min(dims) <= 0:
            raise InputError(path, f"{where}.3d.dimensions {dims}: every size must be positive")
        if not 0.5 < np.linalg.norm(quat) < 2.0:
            raise InputError(
                path,
                f"{where}.3d.rotation {quat}: not a rotation quaternion [w, x, y, z] (norm {np.linalg.norm(quat):.3g})",
            )
        truncation = obj.get("truncation", 0.0)
        objects.append(
            {
                "label": obj["label"],
                "modal": modal,
                "amodal": amodal,
                "center": _numbers(three["center"], 3, path, f"{where}.3d.center"),
                "dimensions": dims,
                "rotation": quat,
                "truncation": _numbers([truncation], 1, path, f"{where}.truncation")[0],
            }
        )
    ignore = []
    entries = doc.get("ignore", [])  # optional, as in cityscapesScripts' Annotation loader
    if not isinstance(entries, list):
        raise InputError(path, f'"ignore" must be a list of {{"2d": [x, y, w, h]}}, found {js.describe(entries)}')
    for i, entry in enumerate(entries):
        box = entry.get("2d") if isinstance(entry, dict) else None
        ignore.append(_box_xywh(box, path, f"ignore[{i}].2d"))
    return {"objects": objects, "ignore": np.array(ignore, dtype=np.float64).reshape(-1, 4), "sensor_T": T, "K": K}


def _xywh_to_xyxy(box: list[float]) -> list[float]:
    """``[x, y, w, h]`` -> ``[x, y, x + w, y + h]`` (cityscapesScripts ``CsBbox2d.bbox_amodal``)."""
    x, y, w, h = box
    return [x, y, x + w, y + h]
