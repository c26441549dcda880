"""TuSimple lane detection -> lane instance masks and polylines.

Native layout (``train_set.zip`` and ``test_set.zip`` unpacked side by side; ``test_label.json``,
released later as a separate download, sits in RAW_ROOT or in ``test_set/``)::

    RAW_ROOT/
      train_set/
        clips/0313-1/6040/1.jpg .. 20.jpg          20-frame 1 s clips (0313-1, 0313-2: numbered)
        clips/0601/1494453497604532231/20.jpg      (0531, 0601: ns timestamps); 20.jpg is labelled
        label_data_0313.json                       JSON lines {"lanes", "h_samples", "raw_file"}
        label_data_0531.json                       (48 rows 240..710 or 56 rows 160..710)
        label_data_0601.json
      test_set/
        clips/0530/1492626760788443246_0/1.jpg .. 20.jpg
        test_tasks_0627.json                       task file (not read)
        [test_label.json]                          test labels, same schema
      [test_label.json]                            (here or in test_set/)

RAW_ROOT may also be ``train_set/`` or ``test_set/`` itself. A ``test_set/`` without
``test_label.json`` is left out (logged): the test split needs the labels.

Each label line is one sample: the frame ``raw_file`` (relative to its split folder). Per frame:

* ``lane.json``: ``h_samples`` and one x per row and lane (``-2`` = no point), in pixels of the
  stored image; negative x become ``-2`` (the TuSimple metric treats them as missing), x beyond
  the right edge are kept; lanes without any point are dropped (``notes.lane_without_points``).
  Unknown keys (``classes`` of the TuSimple-lane-classes copies) are ignored.
* ``lane.png``: lanes drawn as connected polylines (``--lane-thickness`` px, gaps bridged, as
  LaneNet's ground truth), ids 1..N left to right at the image bottom: by the x where the line
  through a lane's two lowest points meets the last image row (ties: mean x, then file order).
  ``lane.json`` lists the lanes in id order.
* ``sequence``: the clip (``0601/1494453497604532231``); the key is the sanitized ``raw_file``
  without extension (``tusimple_train_clips_0601_1494453497604532231_20``).
* ``prev1`` .. ``prevN`` (``--prev-frames N``): the clip's frames before ``raw_file`` (20 Hz):
  ``<n-k>.jpg`` in its folder for ``raw_file`` ``<n>.jpg`` (``19.jpg`` is t-1 of ``20.jpg``); a
  missing file, or a ``raw_file`` not named by its frame number, is no previous frame.

Splits: the ``label_data_*.json`` lines -> ``train`` (``--val-fraction`` moves whole clips to
``val``), ``test_label.json`` -> ``test``.
"""

from __future__ import annotations

import json
import logging
import math
import posixpath
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mtl_data.errors import InputError, LayoutError
from mtl_data.ingest.layout import SplitLayout, check_root, check_split_layout, missing_folder, nothing_found
from mtl_data.ingest.readers import read_image
from mtl_data.ingest.registry import Converter, Frame, register_converter
from mtl_data.ingest.splits import val_groups
from mtl_data.schema.lanes import NO_POINT, rasterize_lanes
from mtl_data.schema.sample import IGNORE_INDEX, Lanes, Sample, make_key

logger = logging.getLogger(__name__)

#: test_set/ needs clips/ only when its labels exist (a test_set/ without test_label.json is left out).
LAYOUT = {"train_set": SplitLayout(required=("clips",)), "test_set": SplitLayout(required=(), optional=("clips",))}
OUTPUT_SPLIT = {"train_set": "train", "test_set": "test"}
TRAIN_LABELS = "label_data_*.json"
TEST_LABEL = "test_label.json"
LINE_KEYS = ("lanes", "h_samples", "raw_file")
EXPECTED_TREE = (
    f"train_set/ with clips/ and {TRAIN_LABELS}, and/or test_set/ with clips/ and {TEST_LABEL} "
    f"(in RAW_ROOT or test_set/); or one of those split folders itself"
)
#: ``lane.png`` ids are 1..N below the ignore value.
MAX_LANES = IGNORE_INDEX - 1


@dataclass(frozen=True)
class TuSimpleFrame(Frame):
    """A frame = one line of a label file, parsed in ``convert`` (so a bad line is one reject).

    Attributes:
        line: 1-based line number in ``paths["label"]``.
        offset: byte offset of that line in the file.
        split_dir: the folder ``raw_file`` is relative to (``train_set/`` or ``test_set/``).
    """

    line: int = 0
    offset: int = 0
    split_dir: Path | None = None


@dataclass(frozen=True)
class TuSimpleOptions:
    """Options of ``mtl-data ingest tusimple``."""

    val_fraction: float = field(
        default=0.0,
        metadata={
            "range": (0.0, 1.0),
            "help": "fraction of training clips moved to a 'val' split: the round(f x clips) clips with the "
            "lowest hash of their name (at least one)",
        },
    )
    lane_thickness: float = field(
        default=5.0,
        metadata={
            "range": (1.0, 100.0),
            "help": "line width in px of the lanes in lane.png at the native 1280x720 (5 = LaneNet's ground "
            "truth); drawn rounded to whole px, scaled with the image by --max-side",
        },
    )


# ---- pure helpers ------------------------------------------------------------------------------


def order_left_to_right(xs: np.ndarray, h_samples: np.ndarray, bottom: float) -> np.ndarray:
    """Indices that sort lanes left to right at the image row ``bottom``.

    A lane's position is the x where the straight line through its two lowest points meets row
    ``bottom`` (its only point's x when it has one). Lanes in a road image converge towards the
    vanishing point and do not cross below it, so this orders a lane that ends high up at the
    image border (or behind a car) correctly, where the x of its lowest point would not. Ties
    are broken by the mean x, then by the input order.

    Args:
        xs: (N, R) x per lane and row, ``NO_POINT`` where absent; every lane has a point.
        h_samples: (R,) strictly increasing rows.
        bottom: the row to compare at (the last image row).

    Returns:
        (N,) int64 permutation.
    """
    keys = []
    for i, lane in enumerate(np.asarray(xs, dtype=np.float64)):
        valid = lane != NO_POINT
        x, y = lane[valid], np.asarray(h_samples, dtype=np.float64)[valid]
        at = x[-1] if x.size == 1 else x[-1] + (x[-1] - x[-2]) * (bottom - y[-1]) / (y[-1] - y[-2])
        keys.append((float(at), float(x.mean()), i))
    return np.array([i for _, _, i in sorted(keys)], dtype=np.int64)


def normalize_lanes(xs: np.ndarray) -> tuple[np.ndarray, int]:
    """Negative x -> ``NO_POINT``; drop lanes without any point.

    Returns:
        ((M, R) float64 lanes kept, number of lanes dropped).
    """
    xs = np.where(xs < 0, NO_POINT, xs)
    keep = (xs != NO_POINT).any(axis=1)
    return xs[keep], int((~keep).sum())


def _quote(text: str, limit: int = 80) -> str:
    text = text.strip()
    return repr(text if len(text) <= limit else text[:limit] + "...")


#: |x| and rows beyond this (px) are no pixel of any camera image: refused, as drawing them overflows
MAX_COORD = 1e6


def _is_number(value) -> bool:
    """A finite JSON number (not a bool) that a float holds."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


def _clean_raw_file(raw_file) -> str | None:
    """``raw_file`` as a safe relative POSIX path (``clips/0601/<clip>/20.jpg``), or None."""
    if not isinstance(raw_file, str) or not raw_file.strip():
        return None
    path = posixpath.normpath(raw_file.strip().replace("\\", "/"))
    if path.startswith(("/", "../")) or path in (".", ".."):
        return None
    return path


def frame_id(raw_file: str) -> str:
    """The native id of a frame: its ``raw_file`` without extension (``clips/0601/<clip>/20``)."""
    return posixpath.splitext(raw_file)[0]


def clip_of(raw_file: str) -> str:
    """The clip of a frame: ``raw_file``'s folder without ``clips/`` (``0601/<clip>``)."""
    folder = posixpath.dirname(raw_file)
    return folder[len("clips/") :] if folder.startswith("clips/") else folder


def _peek_raw_file(raw: bytes) -> str | None:
    """The valid ``raw_file`` of a label line, or None when the line cannot give one."""
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):  # also UnicodeDecodeError; arrays nested thousands deep
        return None
    return _clean_raw_file(doc.get("raw_file")) if isinstance(doc, dict) else None


def read_label_line(path: Path, offset: int, line: int) -> dict:
    """Parse the label line at byte ``offset`` (line number ``line``) of a JSON-lines file.

    Raises:
        InputError: naming file and line when it is not one JSON object.
    """
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            raw = f.readline()
    except FileNotFoundError:
        raise InputError(path, "label file disappeared after listing") from None
    expected = f"expected one JSON object per line with {', '.join(LINE_KEYS)}"
    try:
        text = raw.decode("utf-8").rstrip("\r\n")  # columns count within the line
        doc = json.loads(text)
    except UnicodeDecodeError:
        raise InputError(path, f"line is not UTF-8 text ({expected})", line=line) from None
    except json.JSONDecodeError as exc:
        raise InputError(
            path, f"malformed JSON line ({exc.msg} at column {exc.pos + 1}): {_quote(text)}; {expected}", line=line
        ) from None
    except RecursionError:
        raise InputError(path, f"JSON line nested too deeply: {_quote(text)}; {expected}", line=line) from None
    if not isinstance(doc, dict):
        raise InputError(path, f"line is a JSON {type(doc).__name__}, {expected}", line=line)
    return doc


def parse_label(doc: dict, path: Path, line: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Check one label object; return ((R,) h_samples, (N, R) lanes as float64, raw_file).

    Raises:
        InputError: naming file and line, what is wrong and what was expected.
    """

    def bad(message: str) -> InputError:
        return InputError(path, message, line=line)

    missing = [k for k in LINE_KEYS if k not in doc]
    if missing:
        found = ", ".join(sorted(doc)) or "none"
        raise bad(
            f"line lacks {', '.join(repr(k) for k in missing)} (a TuSimple label line has "
            f"{', '.join(LINE_KEYS)}; found {found})"
        )
    raw_file = _clean_raw_file(doc["raw_file"])
    if raw_file is None:
        raise bad(
            f"raw_file {doc['raw_file']!r} is not a relative path inside the split folder "
            f"(expected e.g. 'clips/0601/1494453497604532231/20.jpg')"
        )
    rows = doc["h_samples"]
    if not isinstance(rows, list) or not rows or not all(_is_number(v) and abs(v) <= MAX_COORD for v in rows):
        raise bad(
            f"h_samples must be a non-empty list of row numbers (px, within ±{MAX_COORD:g}), "
            f"got {_quote(json.dumps(rows), 60)}"
        )
    for i in range(1, len(rows)):
        if rows[i] <= rows[i - 1]:
            raise bad(f"h_samples must be strictly increasing rows; h_samples[{i}] = {rows[i]} follows {rows[i - 1]}")
    lanes = doc["lanes"]
    if not isinstance(lanes, list):
        raise bad(f"lanes must be a list of lanes (lists of x), got {type(lanes).__name__}")
    for i, lane in enumerate(lanes):
        if not isinstance(lane, list):
            raise bad(f"lane {i} must be a list of x values, got {type(lane).__name__}")
        if len(lane) != len(rows):
            raise bad(
                f"lane {i} has {len(lane)} x values but h_samples has {len(rows)} rows "
                f"(expected one x per row, -2 where the lane has no point)"
            )
        for j, x in enumerate(lane):
            if not _is_number(x):
                raise bad(f"lane {i}: x at row {rows[j]} is {x!r}, expected a finite number (-2 = no point)")
            if abs(x) > MAX_COORD:
                raise bad(f"lane {i}: x at row {rows[j]} is {x:g}, beyond ±{MAX_COORD:g} px (-2 = no point)")
    if len(lanes) > MAX_LANES:
        raise bad(f"{len(lanes)} lanes; lane.png holds at most {MAX_LANES}")
    xs = np.array(lanes, dtype=np.float64).reshape(len(lanes), len(rows))
    return np.array(rows, dtype=np.float64), xs, raw_file


# ---- converter --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Split:
    """A native split found under the root: its folder and label files."""

    native: str
    folder: Path
    labels: tuple[Path, ...]


@register_converter
class TuSimpleConverter(Converter):
    __doc__ = __doc__
    name = "tusimple"
    Options = TuSimpleOptions
    no_previous_frames = None

    def __init__(self, root: Path, options: TuSimpleOptions | None = None, taxonomy: str = "unified"):
        super().__init__(root, options, taxonomy)
        self._told_no_test_label = False  # check_layout and frames both look: say it once

    # ---- layout --------------------------------------------------------------------------------

    def check_layout(self) -> None:
        self._splits()

    def _split_folders(self) -> dict[str, Path]:
        """Native split folders present: sub-folders of the root, or the root itself."""
        root = self.root
        check_root(root, "TuSimple", EXPECTED_TREE)
        if any((root / name).is_dir() for name in LAYOUT):
            return {name: root / name for name in check_split_layout(root, "TuSimple", LAYOUT)}
        if any(root.glob(TRAIN_LABELS)):
            return {"train_set": root}
        if (root / TEST_LABEL).is_file():
            return {"test_set": root}
        raise nothing_found(root, "TuSimple split", EXPECTED_TREE, lambda p: any((p / n).is_dir() for n in LAYOUT))

    def _splits(self) -> list[_Split]:
        """The labelled native splits, checked.

        Raises:
            LayoutError: naming the missing folder or file and what was expected.
        """
        folders = self._split_folders()
        in_root = self.root / TEST_LABEL if self.root not in folders.values() else None
        out = []
        if "train_set" in folders:
            folder = folders["train_set"]
            labels = tuple(sorted(folder.glob(TRAIN_LABELS)))
            for p in labels:
                _not_a_folder(p, "training labels")
            if not labels:
                raise LayoutError(
                    f"{folder}: no {TRAIN_LABELS} (expected the training label files, JSON lines, next to clips/)"
                )
            out.append(_Split("train_set", folder, labels))
        if "test_set" in folders:
            folder = folders["test_set"]
            label = _test_label(folder, in_root)
            if label is None and not self._told_no_test_label:
                self._told_no_test_label = True
                logger.warning(
                    "%s: no %s in it%s; the test split is left out",
                    folder,
                    TEST_LABEL,
                    "" if in_root is None else f" or in {self.root}",
                )
            elif label is not None:
                out.append(_Split("test_set", folder, (label,)))
        elif in_root is not None and in_root.is_file():
            raise missing_folder(
                self.root / "test_set", f"{in_root} names frames relative to test_set/; expected test_set/clips/"
            )
        for split in out:
            if not (split.folder / "clips").is_dir():
                raise missing_folder(
                    split.folder / "clips", f"expected the clip frames that {split.labels[0].name} names"
                )
        if not out:
            raise LayoutError(f"{self.root}: no labelled TuSimple split (expected {EXPECTED_TREE})")
        return out

    # ---- listing -------------------------------------------------------------------------------

    def frames(self) -> list[Frame]:
        """One frame per non-blank label line, sorted by split and id (``raw_file`` without extension).

        A line without a usable ``raw_file`` (malformed JSON ...) gets the id ``<file>:<line>``;
        ``convert`` then reports what is wrong with it, so it is one reject, not a failed listing.
        """
        listed = []  # (native split, folder, label file, line, offset, raw_file or None)
        for split in self._splits():
            for label in split.labels:
                count = len(listed)
                for line, offset, raw in _lines(label):
                    listed.append((split.native, split.folder, label, line, offset, _peek_raw_file(raw)))
                if len(listed) == count:  # a label file truncated to nothing: no frame would say so
                    raise InputError(
                        label,
                        f"no label lines (expected one JSON object per line with {', '.join(LINE_KEYS)})",
                        hint="re-extract it",
                    )
        train_clips = {clip_of(rf) for native, *_, rf in listed if native == "train_set" and rf is not None}
        val = val_groups(train_clips, self.options.val_fraction, salt="tusimple")
        out = []
        for native, folder, label, line, offset, raw_file in listed:
            split = OUTPUT_SPLIT[native]
            paths = {"label": label}
            if raw_file is None:
                fid = f"{label.name}:{line}"
            else:
                fid = frame_id(raw_file)
                paths["image"] = folder / raw_file
                if native == "train_set" and clip_of(raw_file) in val:
                    split = "val"
            out.append(TuSimpleFrame(split=split, id=fid, paths=paths, line=line, offset=offset, split_dir=folder))
        return sorted(out, key=lambda f: (f.split, f.id))

    # ---- conversion ----------------------------------------------------------------------------

    def previous_frame_paths(self, frame: Frame, count: int) -> list[Path]:
        image = frame.paths.get("image")  # absent for a line without raw_file: convert reports it
        if image is None or not image.stem.isdigit():
            return []
        number = int(image.stem)
        return [image.with_name(f"{number - k}{image.suffix}") for k in range(1, count + 1) if number - k >= 1]

    def convert(self, frame: Frame) -> Sample:
        label = frame.paths["label"]
        doc = read_label_line(label, frame.offset, frame.line)
        h_samples, xs, raw_file = parse_label(doc, label, frame.line)
        image_path = frame.split_dir / raw_file
        where = f"raw_file of {label.name}:{frame.line}"
        image = read_image(
            image_path,
            f"image missing ({where}; expected the clip frame, e.g. 20.jpg)",
            f"does not decode as an image ({where}; truncated or not a JPEG?)",
        )
        h, w = image.shape[:2]

        xs, dropped = normalize_lanes(xs)
        xs = xs[order_left_to_right(xs, h_samples, h - 1)]
        thickness = float(self.options.lane_thickness)
        lane = Lanes(
            mask=rasterize_lanes(xs, h_samples, (h, w), thickness), h_samples=h_samples, xs=xs, thickness=thickness
        )
        return Sample(
            key=make_key(self.name, frame.split, frame.id),
            source=self.name,
            split=frame.split,
            id=frame.id,
            image=image,
            orig_size=(h, w),
            sequence=clip_of(raw_file) or None,
            lane=lane,
            notes={"lane_without_points": dropped} if dropped else {},
        )


def _test_label(test_dir: Path, in_root: Path | None) -> Path | None:
    """``test_label.json`` in RAW_ROOT or in ``test_set/`` (both: they must be the same file)."""
    candidates = [p for p in (in_root, test_dir / TEST_LABEL) if p is not None]
    for p in candidates:
        _not_a_folder(p, "the test labels")
    found = [p for p in candidates if p.is_file()]
    if len(found) == 2 and found[0].read_bytes() != found[1].read_bytes():
        raise LayoutError(f"{found[0]} and {found[1]} differ: keep one {TEST_LABEL} (in RAW_ROOT or in test_set/)")
    return found[0] if found else None


def _not_a_folder(path: Path, what: str) -> None:
    """Raise LayoutError when a folder stands where the label file ``path`` belongs."""
    if path.is_dir():
        raise LayoutError(f"{path}: a folder is in place of the label file (expected {what}: JSON lines)")


def _lines(path: Path):
    """``(line number, byte offset, bytes)`` of the non-blank lines of a file."""
    offset = 0
    try:
        with open(path, "rb") as f:
            for number, raw in enumerate(f, start=1):
                if raw.strip():
                    yield number, offset, raw
                offset += len(raw)
    except OSError as exc:
        raise InputError(path, f"label file cannot be read: {exc.strerror}") from None
