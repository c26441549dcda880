"""GTSRB (German Traffic Sign Recognition Benchmark) -> traffic-sign class and sign ROI.

Native layout: either of the two common distributions, detected automatically.

The official one (the INI zips unpacked into RAW_ROOT; the test ground truth is a zip of its
own, ``GTSRB_Final_Test_GT.zip``, whose ``GT-final_test.csv`` lands beside ``GTSRB/``)::

    RAW_ROOT/
      GTSRB/
        Final_Training/Images/
          00000/ .. 00042/              one folder per class id (5 digits)
            GT-00000.csv                Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId (CRLF)
            00000_00000.ppm ...         <track 5>_<index 5>.ppm: one physical sign, frames in time
        Final_Test/Images/
          00000.ppm .. 12629.ppm
          GT-final_test.test.csv        the same columns without ClassId
      GT-final_test.csv                 [optional] the test rows with ClassId
                                        (also read from GTSRB/Final_Test/, where copies keep it)

The Kaggle one ("GTSRB - German Traffic Sign Recognition Benchmark")::

    RAW_ROOT/
      Train.csv                         Width,Height,Roi.X1,Roi.Y1,Roi.X2,Roi.Y2,ClassId,Path
      Train/0/ .. Train/42/             <class 5>_<track 5>_<index 5>.png
      Test.csv                          the same columns
      Test/00000.png ..
      Meta/, Meta.csv                   class pictograms (not read)

Images are PPM or PNG, whatever the CSV row names. A Kaggle ``Path`` is resolved by its
trailing ``Train/<class>/<file>`` or ``Test/<file>`` components, so a prefix such as ``/code/``
is fine. Every image needs its CSV row and every row its image.

Output: ``Final_Training`` / ``Train`` -> ``train`` (``--val-fraction`` moves whole tracks of
each class to ``val``), ``Final_Test`` / ``Test`` -> ``test``. Per image:

* the image as stored in the dataset (the crop around one sign); a row whose Width/Height
  disagree with the image (resized copies are common) is bad input;
* ``sign``: ClassId (0..42, the 43 names of ``taxonomy.SIGN_CLASSES``) and the ROI
  ``[Roi.X1, Roi.Y1, Roi.X2, Roi.Y2]`` as in the CSV (inclusive pixel indices);
  test images listed only in ``GT-final_test.test.csv`` have no label;
* ``sequence``: ``<class 5>_<track 5>`` for training images (track numbers restart in every
  class folder), none for test images;
* id: ``<class 5>_<track 5>_<index 5>`` for training, the 5-digit stem for test: the same key
  for the same image in both layouts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from mtl_data.errors import InputError, LayoutError
from mtl_data.ingest.layout import check_root, missing_folder, nothing_found
from mtl_data.ingest.readers import decode_or_raise
from mtl_data.ingest.registry import Converter, Frame, register_converter
from mtl_data.ingest.splits import hash_fraction
from mtl_data.schema.parsing import parse_numbers
from mtl_data.schema.sample import Sample, Sign, make_key
from mtl_data.schema.taxonomy import SIGN_CLASSES

NUMBER_COLUMNS = ("Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2")
IMAGE_SUFFIXES = (".ppm", ".png")
_TRAIN_STEM = re.compile(r"^(\d{5})_(\d{5})$")  # official: <track>_<index>
_KAGGLE_TRAIN_STEM = re.compile(r"^(\d{5})_(\d{5})_(\d{5})$")  # Kaggle: <class>_<track>_<index>
_TEST_STEM = re.compile(r"^\d{5}$")
_CLASS_DIR = re.compile(r"^\d{5}$")
EXPECTED_TREE = (
    "GTSRB/Final_Training/Images/<class>/GT-<class>.csv and/or GTSRB/Final_Test/Images/ "
    "(official), or Train.csv + Train/, Test.csv + Test/ (Kaggle)"
)


@dataclass(frozen=True)
class CsvSpec:
    """The header one kind of GTSRB CSV must have.

    Attributes:
        delimiter: ``;`` in the official files, ``,`` in Kaggle's.
        columns: the expected header, in the dataset's order (extra columns are ignored).
        name_column: the column naming the image (``Filename`` or ``Path``).
    """

    delimiter: str
    columns: tuple[str, ...]
    name_column: str

    @property
    def header(self) -> str:
        return self.delimiter.join(self.columns)

    @property
    def labelled(self) -> bool:
        return "ClassId" in self.columns


OFFICIAL = CsvSpec(";", ("Filename", *NUMBER_COLUMNS, "ClassId"), "Filename")
OFFICIAL_UNLABELLED = CsvSpec(";", ("Filename", *NUMBER_COLUMNS), "Filename")
KAGGLE = CsvSpec(",", (*NUMBER_COLUMNS, "ClassId", "Path"), "Path")


@dataclass(frozen=True)
class CsvTable:
    """One CSV and where its images are.

    Attributes:
        split: ``train`` or ``test`` (before ``--val-fraction``).
        csv: the CSV file.
        spec: its expected header.
        columns: column name -> position in this file's header.
        image_dir: official: the folder holding the images; Kaggle: RAW_ROOT.
        class_dir: official training: the 5-digit class folder name, else None.
        kaggle_dir: Kaggle: ``Train`` or ``Test``, else None.
    """

    split: str
    csv: Path
    spec: CsvSpec
    columns: dict[str, int]
    image_dir: Path
    class_dir: str | None = None
    kaggle_dir: str | None = None

    @property
    def tag(self) -> str:
        """Prefix of the ids given to rows that name no usable image (``GT-00000_line7``)."""
        return self.csv.name.rsplit(".csv", 1)[0].replace(".", "_")


@dataclass(frozen=True, slots=True)
class CsvRow:
    """One data row of a CSV, as listed (values are checked when the frame is converted).

    Attributes:
        line: 1-based line number in the CSV.
        fields: the text fields, stripped (in header order).
        image: the image the row names, or None when the row names none usable.
        class_id: the class its folder / file name says (training images), else None.
        track: ``<class 5>_<track 5>`` for training images, else None.
        error: why the row cannot be converted at all (field count, file name), or None.
    """

    line: int
    fields: tuple[str, ...]
    image: Path | None = None
    class_id: int | None = None
    track: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class GtsrbOptions:
    """Options of ``mtl-data ingest gtsrb``."""

    val_fraction: float = field(
        default=0.0,
        metadata={
            "range": (0.0, 1.0),
            "help": "fraction of each class's tracks moved to 'val': round(f x tracks) whole tracks per class "
            "(at least one, never all), those with the lowest hash of their id",
        },
    )


# ---- CSV reading ----------------------------------------------------------------------------------


def _read_lines(path: Path, what: str) -> list[str]:
    """The lines of a CSV (CRLF or LF, a UTF-8 byte-order mark dropped)."""
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise LayoutError(f"{path}: not a text file (expected {what})") from None


def _is_csv(path: Path) -> bool:
    """Whether the CSV ``path`` exists; a folder in its place is a LayoutError (not a missing CSV,
    which for the test split silently means "unlabelled")."""
    if path.is_dir():
        raise LayoutError(f"{path}: a folder is in place of the CSV (expected a file, or nothing)")
    return path.is_file()


def check_header(path: Path, spec: CsvSpec) -> dict[str, int]:
    """Column positions of a GTSRB CSV after checking its header line.

    Raises:
        LayoutError: naming the file, line 1 and the expected header when the file is empty,
            uses the other delimiter, or lacks a column.
    """
    expected = f"the header {spec.header!r} ({spec.delimiter!r}-separated)"
    try:
        with path.open(encoding="utf-8-sig") as f:  # only the first line: a whole CSV is read later
            header = f.readline().rstrip("\r\n")
    except UnicodeDecodeError:
        raise LayoutError(f"{path}:1: not a text file (expected {expected})") from None
    if not header.strip():
        raise LayoutError(f"{path}:1: no header line (expected {expected})")
    names = [n.strip() for n in header.split(spec.delimiter)]
    missing = [c for c in spec.columns if c not in names]
    if missing:
        other = "," if spec.delimiter == ";" else ";"
        if all(c in [n.strip() for n in header.split(other)] for c in spec.columns):
            raise LayoutError(f"{path}:1: header {header!r} is {other!r}-separated; expected {expected}")
        raise LayoutError(f"{path}:1: header {header!r} lacks {', '.join(missing)}; expected {expected}")
    return {n: i for i, n in enumerate(names)}


def parse_rows(table: CsvTable, root: Path) -> dict[str, CsvRow]:
    """``{frame id: row}`` of a CSV, in file order.

    Only what the listing needs is checked here (field count, the image named and the id it
    gives); a row that fails gets the id ``<csv>_line<N>`` and its ``error``, so it is
    reported when converted (rejected under ``--on-error skip``) like any other bad frame.
    """
    spec, d = table.spec, table.spec.delimiter
    lines = _read_lines(table.csv, f"the header {spec.header!r}")
    width = len(lines[0].split(d)) if lines else 0
    rows: dict[str, CsvRow] = {}
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = tuple(f.strip() for f in line.split(d))
        if len(fields) != width:
            error = (
                f"expected {width} {d!r}-separated fields ({lines[0].strip()}), found {len(fields)}: {line.strip()!r}"
            )
            rows[f"{table.tag}_line{lineno}"] = CsvRow(lineno, fields, error=error)
            continue
        name = fields[table.columns[spec.name_column]]
        frame_id, row = _resolve(table, root, lineno, fields, name)
        if frame_id in rows:
            frame_id, row = (
                f"{table.tag}_line{lineno}",
                CsvRow(
                    lineno,
                    fields,
                    image=row.image,
                    error=f"{spec.name_column} {name!r} is listed again (first on line {rows[frame_id].line})",
                ),
            )
        rows[frame_id] = row
    return rows


def _resolve(table: CsvTable, root: Path, lineno: int, fields: tuple[str, ...], name: str) -> tuple[str, CsvRow]:
    """Frame id and row for the image a CSV row names."""
    col = table.spec.name_column
    fallback = f"{table.tag}_line{lineno}"
    if table.kaggle_dir is None:  # official: a bare file name inside the table's folder
        if "/" in name or "\\" in name or not name:
            return fallback, CsvRow(lineno, fields, error=f"{col} {name!r} is not a file name in {table.image_dir}")
        stem = PurePosixPath(name).stem
        if table.split == "test":
            if not _TEST_STEM.match(stem):
                return fallback, CsvRow(lineno, fields, error=f"{col} {name!r}: expected <5 digits>.ppm")
            return stem, CsvRow(lineno, fields, image=table.image_dir / name)
        m = _TRAIN_STEM.match(stem)
        if not m:
            return fallback, CsvRow(
                lineno, fields, error=f"{col} {name!r}: expected <track 5 digits>_<index 5 digits>.ppm"
            )
        return f"{table.class_dir}_{stem}", CsvRow(
            lineno,
            fields,
            image=table.image_dir / name,
            class_id=int(table.class_dir),
            track=f"{table.class_dir}_{m.group(1)}",
        )

    # Kaggle: resolved by the trailing components, whatever prefix the path carries
    parts = PurePosixPath(name.replace("\\", "/")).parts
    need = 3 if table.kaggle_dir == "Train" else 2
    shape = "Train/<class>/<class 5>_<track 5>_<index 5>.png" if need == 3 else "Test/<5 digits>.png"
    if len(parts) < need or parts[-need] != table.kaggle_dir:
        return fallback, CsvRow(
            lineno, fields, error=f"{col} {name!r} does not end in {shape} (a prefix such as /code/ is fine)"
        )
    image = root.joinpath(*parts[-need:])
    stem = PurePosixPath(parts[-1]).stem
    if need == 2:
        if not _TEST_STEM.match(stem):
            return fallback, CsvRow(lineno, fields, error=f"{col} {name!r} does not end in {shape}")
        return stem, CsvRow(lineno, fields, image=image)
    m = _KAGGLE_TRAIN_STEM.match(stem)
    folder = parts[-2]
    if not m or not folder.isdigit() or int(folder) != int(m.group(1)):
        return fallback, CsvRow(
            lineno, fields, error=f"{col} {name!r} does not end in {shape} with the same class in folder and file name"
        )
    return stem, CsvRow(lineno, fields, image=image, class_id=int(folder), track=f"{m.group(1)}_{m.group(2)}")


# ---- the converter -----------------------------------------------------------------------------


def _looks_like_root(folder: Path) -> bool:
    """Whether ``folder`` holds a GTSRB layout (what a "did you mean" hint looks for)."""
    return (folder / "GTSRB").is_dir() or (folder / "Train.csv").is_file()


@register_converter
class GtsrbConverter(Converter):
    __doc__ = __doc__
    name = "gtsrb"
    # a track's images are crops of one sign at growing sizes, not frames of a camera
    no_previous_frames = "not applicable: samples are sign crops, not camera frames"
    frames_per_task = 64  # crops of ~30x30 px: batch them for the process pool
    Options = GtsrbOptions

    def __init__(self, root: Path, options: GtsrbOptions | None = None, taxonomy: str = "unified"):
        # ``taxonomy`` has nothing to map: GTSRB's 43 class ids are the unified sign ids.
        super().__init__(root, options, taxonomy)
        self._cache: dict = {}  # per process: the layout's tables and their parsed rows

    def __getstate__(self):  # workers re-read the CSVs they need (a few MB for Kaggle's Train.csv)
        return {**self.__dict__, "_cache": {}}

    def class_tables(self) -> dict[str, list[str]]:
        return {"sign": list(SIGN_CLASSES)}

    # ---- layout ------------------------------------------------------------------------------

    def check_layout(self) -> None:
        self._tables()

    def _tables(self) -> list[CsvTable]:
        if "tables" not in self._cache:
            self._cache["tables"] = self._find_tables()
        return self._cache["tables"]

    def _find_tables(self) -> list[CsvTable]:
        root = self.root
        check_root(root, "GTSRB", EXPECTED_TREE)
        official = (root / "GTSRB").is_dir()
        kaggle = any((root / n).is_file() for n in ("Train.csv", "Test.csv")) or (
            (root / "Train").is_dir() and (root / "Test").is_dir()
        )
        if official and kaggle:
            raise LayoutError(
                f"{root}: holds both the official layout (GTSRB/) and the Kaggle one "
                f"(Train.csv, Test.csv); RAW_ROOT must hold one of them (they list the same images)"
            )
        if official:
            return self._official_tables()
        if kaggle:
            return self._kaggle_tables()
        raise nothing_found(root, "GTSRB layout", EXPECTED_TREE, _looks_like_root)

    def _official_tables(self) -> list[CsvTable]:
        gtsrb = self.root / "GTSRB"
        train_dir, test_dir = gtsrb / "Final_Training" / "Images", gtsrb / "Final_Test" / "Images"
        if not train_dir.is_dir() and not test_dir.is_dir():
            raise LayoutError(
                f"{gtsrb}: neither Final_Training/Images/ nor Final_Test/Images/ found (expected {EXPECTED_TREE})"
            )
        tables = []
        if train_dir.is_dir():
            class_dirs = sorted(p for p in train_dir.iterdir() if p.is_dir() and _CLASS_DIR.match(p.name))
            if not class_dirs:
                raise LayoutError(
                    f"{train_dir}: no class folder (expected 00000/ .. 00042/, each with its GT-<class>.csv and images)"
                )
            for folder in class_dirs:
                csv = folder / f"GT-{folder.name}.csv"
                if not _is_csv(csv):
                    raise LayoutError(
                        f"{csv}: missing (every class folder holds its GT-<class>.csv with "
                        f"the header {OFFICIAL.header!r})"
                    )
                tables.append(
                    CsvTable("train", csv, OFFICIAL, check_header(csv, OFFICIAL), folder, class_dir=folder.name)
                )
        if test_dir.is_dir():
            labelled = [
                p for p in (self.root / "GT-final_test.csv", gtsrb / "Final_Test" / "GT-final_test.csv") if _is_csv(p)
            ]
            if labelled:
                csv, spec = labelled[0], OFFICIAL
            else:
                csv, spec = test_dir / "GT-final_test.test.csv", OFFICIAL_UNLABELLED
                if not _is_csv(csv):
                    raise LayoutError(
                        f"{csv}: missing (expected it, or {self.root / 'GT-final_test.csv'} with "
                        f"ClassId, to list the images of {test_dir})"
                    )
            tables.append(CsvTable("test", csv, spec, check_header(csv, spec), test_dir))
        return tables

    def _kaggle_tables(self) -> list[CsvTable]:
        tables = []
        for folder, split in (("Train", "train"), ("Test", "test")):
            csv, images = self.root / f"{folder}.csv", self.root / folder
            if _is_csv(csv) and not images.is_dir():
                raise missing_folder(images, f"{csv.name} lists its images; expected {EXPECTED_TREE}")
            if images.is_dir() and not csv.is_file():
                raise LayoutError(
                    f"{csv}: missing ({folder}/ exists; the CSV gives each image's size, ROI "
                    f"and class, with the header {KAGGLE.header!r})"
                )
            if csv.is_file():
                tables.append(CsvTable(split, csv, KAGGLE, check_header(csv, KAGGLE), self.root, kaggle_dir=folder))
        return tables

    def _rows(self, table: CsvTable) -> dict[str, CsvRow]:
        key = ("rows", table.csv)
        if key not in self._cache:
            self._cache[key] = parse_rows(table, self.root)
        return self._cache[key]

    def _table(self, csv: Path) -> CsvTable:
        return next(t for t in self._tables() if t.csv == csv)

    # ---- listing -----------------------------------------------------------------------------

    def frames(self) -> list[Frame]:
        listed: list[tuple[CsvTable, str, CsvRow | None, Path | None]] = []
        tracks: dict[int, set[str]] = {}
        for table in self._tables():
            rows = self._rows(table)
            for frame_id, row in rows.items():
                listed.append((table, frame_id, row, row.image))
                if row.track is not None:
                    tracks.setdefault(row.class_id, set()).add(row.track)
            # The union with the images on disk: an image without its row is reported, not skipped.
            # Unless a row names no usable image: it may be the row of that image, and is reported.
            named = {row.image for row in rows.values()}
            if None in named:
                continue
            for image in self._images_on_disk(table):
                frame_id = self._orphan_id(table, image)
                if image not in named and frame_id not in rows:
                    listed.append((table, frame_id, None, image))
        val = self._val_tracks(tracks)
        out = []
        for table, frame_id, row, image in listed:
            track = row.track if row is not None else self._orphan_track(table, image)
            split = "val" if table.split == "train" and track in val else table.split
            paths = {"csv": table.csv} if image is None else {"csv": table.csv, "image": image}
            out.append(Frame(split=split, id=frame_id, paths=paths))
        return sorted(out, key=lambda f: (f.split, f.id))

    def _images_on_disk(self, table: CsvTable) -> list[Path]:
        if table.kaggle_dir == "Train":
            folders = sorted(p for p in (self.root / "Train").iterdir() if p.is_dir())
        else:
            folders = [table.image_dir if table.kaggle_dir is None else self.root / table.kaggle_dir]
        return [
            p
            for folder in folders
            for p in sorted(folder.iterdir())
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        ]

    @staticmethod
    def _orphan_id(table: CsvTable, image: Path) -> str:
        if table.class_dir is not None:
            return f"{table.class_dir}_{image.stem}"
        return image.stem

    def _orphan_track(self, table: CsvTable, image: Path) -> str | None:
        stem = self._orphan_id(table, image)
        m = _KAGGLE_TRAIN_STEM.match(stem) if table.split == "train" else None
        return f"{m.group(1)}_{m.group(2)}" if m else None

    def _val_tracks(self, tracks: dict[int, set[str]]) -> set[str]:
        """Per class, round(f x tracks) tracks (at least one, never all): those with the lowest hash.

        Per class because GTSRB's classes have 7 to 75 tracks: one global draw would leave the rare
        classes out of val about half of the time at f = 0.1.
        """
        fraction = self.options.val_fraction
        val: set[str] = set()
        if fraction <= 0:
            return val
        for class_tracks in tracks.values():
            count = min(len(class_tracks) - 1, max(1, round(fraction * len(class_tracks))))
            val.update(sorted(class_tracks, key=lambda t: (hash_fraction(t, "gtsrb"), t))[:count])
        return val

    # ---- conversion --------------------------------------------------------------------------

    def convert(self, frame: Frame) -> Sample:
        table = self._table(frame.paths["csv"])
        row = self._rows(table).get(frame.id)
        if row is None:
            raise InputError(
                frame.paths["image"],
                f"not listed in {table.csv} (every image needs a row with its size, ROI and class)",
            )
        if row.error is not None:
            raise InputError(table.csv, row.error, line=row.line)
        width, height, roi, class_id = self._values(table, row)

        try:
            data = row.image.read_bytes()
        except FileNotFoundError:
            name = row.fields[table.columns[table.spec.name_column]]
            raise InputError(
                table.csv, f"{table.spec.name_column} {name!r}: image {row.image} is missing", line=row.line
            ) from None
        except IsADirectoryError:
            raise InputError(
                row.image, "a folder is in place of the image", hint="remove or rename the folder"
            ) from None
        except OSError as exc:
            raise InputError(row.image, f"cannot read the image: {exc.strerror}") from None
        image = decode_or_raise(data, row.image, "does not decode as an image (truncated, or not a PPM/PNG?)")
        h, w = image.shape[:2]
        if (w, h) != (width, height):
            raise InputError(
                table.csv,
                f"Width/Height say {width}x{height} but {row.image.name} is {w}x{h} "
                f"(a resized copy? the ROI refers to the original size)",
                line=row.line,
            )
        x1, y1, x2, y2 = roi
        # Lenient by one pixel at the far edges: inclusive indices should stop at w - 1.
        if not (0 <= x1 <= x2 <= w and 0 <= y1 <= y2 <= h):
            raise InputError(
                table.csv,
                f"ROI [{x1:g}, {y1:g}, {x2:g}, {y2:g}] is not an ordered box inside "
                f"the {w}x{h} image (expected 0 <= Roi.X1 <= Roi.X2 <= Width, same for Y)",
                line=row.line,
            )

        return Sample(
            key=make_key(self.name, frame.split, frame.id),
            source=self.name,
            split=frame.split,
            id=frame.id,
            image=image,
            orig_size=(h, w),
            sequence=row.track,
            sign=None if class_id is None else Sign(class_id, roi),
        )

    def _values(self, table: CsvTable, row: CsvRow) -> tuple[int, int, tuple[float, ...], int | None]:
        """Width, height, ROI and class id of a row, checked.

        Raises:
            InputError: naming the CSV, the line and the field.
        """
        names = [*NUMBER_COLUMNS, *(["ClassId"] if table.spec.labelled else [])]
        texts = [row.fields[table.columns[n]] for n in names]
        values = parse_numbers(texts, table.csv, row.line, names)
        for name, text, value in zip(names, texts, values):
            if name in ("Width", "Height", "ClassId") and not float(value).is_integer():
                raise InputError(table.csv, f"{name} is not an integer: {text!r}", line=row.line)
        width, height = int(values[0]), int(values[1])
        roi = tuple(float(v) for v in values[2:6])
        if not table.spec.labelled:
            return width, height, roi, None
        class_id = int(values[6])
        if not 0 <= class_id < len(SIGN_CLASSES):
            raise InputError(
                table.csv,
                f"ClassId {class_id} is outside 0..{len(SIGN_CLASSES) - 1} (GTSRB's {len(SIGN_CLASSES)} classes)",
                line=row.line,
            )
        if row.class_id is not None and class_id != row.class_id:
            raise InputError(
                table.csv,
                f"ClassId {class_id} but the image is filed under class {row.class_id} ({row.image.parent.name}/)",
                line=row.line,
            )
        return width, height, roi, class_id
