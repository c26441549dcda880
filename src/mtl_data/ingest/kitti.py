"""KITTI object detection -> 2D boxes, 3D boxes and sparse LiDAR depth.

Native layout (the ``data_object_{image_2,label_2,calib,velodyne}`` downloads unpacked into
one folder)::

    RAW_ROOT/
      training/
        image_2/000000.png ...    left colour camera, 8-bit RGB PNG; the size varies per frame
        label_2/000000.txt ...    one object per line, 15 space-separated fields
        calib/000000.txt ...      P0..P3, R0_rect, Tr_velo_to_cam, Tr_imu_to_velo (+ blank line)
        velodyne/000000.bin ...   float32 (x, y, z, reflectance) per point   [optional folder]
        prev_2/000000_01.png ...  the 3 frames before image_2/000000.png (_01 = t-1, 10 Hz): the
                                  "3 temporally preceding frames" package; read only with
                                  --prev-frames; a missing file is no previous frame  [optional]
      testing/
        image_2/ calib/ [velodyne/] [prev_2/]                             (no labels)

Output: ``training`` -> ``train`` (``--val-fraction`` moves a hashed subset of frame ids to
``val``), ``testing`` -> ``test``. Per frame:

* ``det2d``: label_2 boxes (left, top, right, bottom px); ``DontCare`` -> ignore regions;
  classes through the taxonomy; truncation, occlusion and native class kept per box.
* ``det3d``: label_2 location (bottom centre, rectified camera 0), h/w/l and rotation_y,
  converted to the geometric centre in the optical frame of the camera-2 image
  (see ``schema.kitti_calib``).
* ``depth``: the velodyne scan through the frame's own ``Tr_velo_to_cam``, ``R0_rect`` and
  ``P2``; points behind the camera or outside the image dropped; nearest point per pixel.
  Without a ``velodyne/`` folder, samples have no depth.
* ``K`` of the camera-2 image in ``meta.json``.
* ``prev1`` .. ``prevN`` (``--prev-frames N``): ``prev_2/<id>_0k.png`` as t-k, through the same
  image path; they use the labelled frame's calibration (the package has none of its own).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mtl_data.errors import InputError
from mtl_data.ingest.layout import SplitLayout, check_split_layout, list_stems
from mtl_data.ingest.readers import read_file, read_image, read_text
from mtl_data.ingest.registry import Converter, Frame, register_converter
from mtl_data.ingest.splits import is_val
from mtl_data.schema import geometry as geo
from mtl_data.schema.kitti_calib import kitti_label_to_box3d, parse_kitti_calib, split_projection, velo_to_optical
from mtl_data.schema.parsing import parse_numbers
from mtl_data.schema.sample import Det2D, Det3D, Sample, make_key
from mtl_data.schema.taxonomy import DET_TABLES, det_class_map

#: the left camera's previous frames: ``prev_2/<id>_<k:02d>.png`` is t-k of ``image_2/<id>.png``
PREV_FOLDER = "prev_2"
LAYOUT = {
    "training": SplitLayout(required=("image_2", "label_2", "calib"), optional=("velodyne", PREV_FOLDER)),
    "testing": SplitLayout(required=("image_2", "calib"), optional=("velodyne", PREV_FOLDER)),
}
OUTPUT_SPLIT = {"training": "train", "testing": "test"}
_MISSING = "{} missing for this frame (other files of the frame exist)"

#: label_2 field names, in file order (the 16th, ``score``, exists only in result files).
LABEL_FIELDS = (
    "type",
    "truncated",
    "occluded",
    "alpha",
    "left",
    "top",
    "right",
    "bottom",
    "height",
    "width",
    "length",
    "x",
    "y",
    "z",
    "rotation_y",
)


@dataclass(frozen=True)
class KittiLabels:
    """The objects of one label_2 file, column-wise.

    Attributes:
        types: native class per object.
        values: (N, 14) float64, the numeric fields in ``LABEL_FIELDS[1:]`` order.
    """

    types: tuple[str, ...]
    values: np.ndarray

    def column(self, name: str) -> np.ndarray:
        return self.values[:, LABEL_FIELDS.index(name) - 1]


def parse_kitti_label(text: str, path: str | Path = "<label>") -> KittiLabels:
    """Parse a label_2 file (15 fields per line; a 16th score field is tolerated).

    Raises:
        InputError: naming the line when it has the wrong number of fields, a non-numeric
            value or an unknown object type.
    """
    known = DET_TABLES["kitti"]
    types, rows = [], []
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) not in (15, 16):
            raise InputError(
                path,
                f"expected 15 space-separated fields ({' '.join(LABEL_FIELDS)}), found {len(fields)}: {line.strip()!r}",
                line=lineno,
            )
        if fields[0] not in known:
            raise InputError(
                path, f"unknown object type {fields[0]!r} (expected one of {', '.join(known)})", line=lineno
            )
        names = [f"field {i} ({name})" for i, name in enumerate(LABEL_FIELDS[1:], start=2)]
        rows.append(parse_numbers(fields[1:15], path, lineno, names))
        types.append(fields[0])
    return KittiLabels(tuple(types), np.asarray(rows, dtype=np.float64).reshape(-1, 14))


def read_velodyne(path: Path) -> np.ndarray:
    """(N, 4) float32 points (x, y, z, reflectance) of a velodyne .bin file.

    Raises:
        InputError: the file is missing, empty or its size is not a multiple of 16 bytes.
    """
    data = read_file(path, "velodyne scan missing for this frame (every frame needs a .bin when velodyne/ exists)")
    if not data:  # a real scan has ~120k points; an empty file is an interrupted extraction
        raise InputError(
            path, "empty file (0 bytes), expected a velodyne scan", hint="re-extract data_object_velodyne.zip"
        )
    if len(data) % 16:
        raise InputError(
            path,
            f"size {len(data)} bytes is not a multiple of 16 (4 float32 per point): truncated file?",
            hint="re-extract data_object_velodyne.zip",
        )
    return np.frombuffer(data, dtype="<f4").reshape(-1, 4)


@dataclass(frozen=True)
class KittiOptions:
    """Options of ``mtl-data ingest kitti``."""

    val_fraction: float = field(
        default=0.0,
        metadata={
            "range": (0.0, 1.0),
            "help": "fraction of training frame ids moved to a 'val' split (hashed on the frame id: "
            "deterministic, and stable when frames are added)",
        },
    )


@register_converter
class KittiConverter(Converter):
    __doc__ = __doc__
    name = "kitti"
    Options = KittiOptions
    no_previous_frames = None

    def __init__(self, root: Path, options: KittiOptions | None = None, taxonomy: str = "unified"):
        super().__init__(root, options, taxonomy)
        self.classes = det_class_map("kitti", taxonomy)

    def check_layout(self) -> None:
        check_split_layout(self.root, "KITTI object", LAYOUT)

    def class_tables(self) -> dict[str, list[str]]:
        return {"det2d": list(self.classes.names), "det3d": list(self.classes.names)}

    def previous_frame_paths(self, frame: Frame, count: int) -> list[Path]:
        image = frame.paths["image"]  # <split>/image_2/<id>.png
        return [image.parent.parent / PREV_FOLDER / f"{frame.id}_{k:02d}.png" for k in range(1, count + 1)]

    def frames(self) -> list[Frame]:
        out = []
        for native in check_split_layout(self.root, "KITTI object", LAYOUT):
            base = self.root / native
            roles = {"image": ("image_2", ".png"), "calib": ("calib", ".txt")}
            if native == "training":
                roles["label"] = ("label_2", ".txt")
            if (base / "velodyne").is_dir():
                roles["velodyne"] = ("velodyne", ".bin")
            found = {role: list_stems(base / folder, ext) for role, (folder, ext) in roles.items()}
            # The union of ids: a frame with a label but no image is an error to report, not to skip.
            for frame_id in sorted(set().union(*found.values())):
                split = OUTPUT_SPLIT[native]
                if native == "training" and is_val(frame_id, self.options.val_fraction, salt="kitti"):
                    split = "val"
                paths = {role: base / folder / f"{frame_id}{ext}" for role, (folder, ext) in roles.items()}
                out.append(Frame(split=split, id=frame_id, paths=paths))
        return out

    def convert(self, frame: Frame) -> Sample:
        paths = frame.paths
        image = read_image(
            paths["image"],
            "image missing for this frame (its calib/label exist)",
            "does not decode as an image (truncated or not a PNG?)",
        )
        h, w = image.shape[:2]
        calib = parse_kitti_calib(
            read_text(paths["calib"], "calib file", _MISSING.format("calib file")), paths["calib"]
        )
        K, t = split_projection(calib.P2)

        det2d = det3d = depth = None
        if "label" in paths:
            labels = parse_kitti_label(
                read_text(paths["label"], "label file", _MISSING.format("label file")), paths["label"]
            )
            det2d, det3d = self._boxes(labels, t)
        if "velodyne" in paths:
            points = read_velodyne(paths["velodyne"])
            if calib.Tr_velo_to_cam is None:
                raise InputError(paths["calib"], "missing Tr_velo_to_cam, needed to project the velodyne scan")
            depth = geo.project_to_depth(points, K @ velo_to_optical(calib)[:3], (h, w))

        return Sample(
            key=make_key(self.name, frame.split, frame.id),
            source=self.name,
            split=frame.split,
            id=frame.id,
            image=image,
            orig_size=(h, w),
            K=K,
            depth=depth,
            det2d=det2d,
            det3d=det3d,
        )

    def _boxes(self, labels: KittiLabels, t: np.ndarray) -> tuple[Det2D, Det3D]:
        ids = [self.classes.lookup(tp) for tp in labels.types]
        keep = np.array([i is not None for i in ids], dtype=bool)
        classes = np.array([i for i in ids if i is not None], dtype=np.int64)
        names = tuple(tp for tp, i in zip(labels.types, ids) if i is not None)
        bbox = labels.values[:, 3:7]  # left, top, right, bottom
        det2d = Det2D(
            boxes=bbox[keep],
            classes=classes,
            ignore=bbox[~keep],
            truncated=labels.column("truncated")[keep],
            occluded=labels.column("occluded")[keep].astype(np.int64),
            native_class=names,
        )
        boxes3d = kitti_label_to_box3d(
            location=labels.values[keep][:, 10:13],
            hwl=labels.values[keep][:, 7:10],
            rotation_y=labels.column("rotation_y")[keep],
            t=t,
        )
        return det2d, Det3D(boxes=boxes3d, classes=classes, native_class=names)
