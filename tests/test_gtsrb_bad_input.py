"""Bad GTSRB raw input: one clear ``error:`` line (file, line, what was expected), a non-zero
exit, no traceback and nothing half-written; under ``--on-error skip`` a bad row is recorded in
``rejects.jsonl`` and every other image converted. Layout-level problems (a CSV header, a
missing CSV or folder, an empty RAW_ROOT) stop the ingest under either mode.

Every case corrupts a writable copy of a real fixture root (``gtsrb/official`` or
``gtsrb/kaggle``: 4 training and 3 test images each).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import pytest
from conftest import (
    assert_fails_before_writing,
    assert_fails_cleanly,
    assert_skipped_cleanly,
    file_and_line,
    fixture_path,
    ingest_cli,
    ingest_corrupted,
    read_manifest,
    read_rejects,
)

OFFICIAL_HEADER = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"
KAGGLE_HEADER = "Width,Height,Roi.X1,Roi.Y1,Roi.X2,Roi.Y2,ClassId,Path"
TRAIN = "GTSRB/Final_Training/Images"
TEST = "GTSRB/Final_Test/Images"
ALL_KEYS = sorted(
    [f"gtsrb_train_{i}" for i in ("00000_00000_00000", "00000_00000_00001", "00020_00000_00000", "00020_00000_00001")]
    + [f"gtsrb_test_{i}" for i in ("00000", "00001", "00002")]
)


# ---- helpers ----------------------------------------------------------------------------------


def _copy(tmp_path: Path, layout: str) -> Path:
    root = tmp_path / f"{layout}_raw"
    shutil.copytree(fixture_path("gtsrb", layout), root)
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


@pytest.fixture
def official_copy(tmp_path) -> Path:
    return _copy(tmp_path, "official")


@pytest.fixture
def kaggle_copy(tmp_path) -> Path:
    return _copy(tmp_path, "kaggle")


def _edit_csv(path: Path, lineno: int, edit: Callable[[list[str]], list[str]], delimiter: str) -> None:
    """Replace the fields of line ``lineno`` (1-based) of a CSV, keeping its line ends."""
    data = path.read_bytes().decode()
    end = "\r\n" if "\r\n" in data else "\n"
    lines = data.split(end)
    lines[lineno - 1] = delimiter.join(edit(lines[lineno - 1].split(delimiter)))
    path.write_bytes(end.join(lines).encode())


def _set_field(path: Path, lineno: int, column: int, value: str, delimiter: str = ";") -> None:
    _edit_csv(path, lineno, lambda f: [*f[:column], value, *f[column + 1 :]], delimiter)


# ---- per-row corruptions ----------------------------------------------------------------------


def _resized_copy(root: Path) -> None:  # the common gotcha: images resized, CSVs kept
    path = root / TRAIN / "00000/00000_00001.ppm"
    assert cv2.imwrite(str(path), cv2.resize(cv2.imread(str(path)), (32, 32)))


def _image_deleted(root: Path) -> None:
    (root / TRAIN / "00020/00000_00001.ppm").unlink()


def _roi_x1_not_a_number(root: Path) -> None:
    _set_field(root / TRAIN / "00020/GT-00020.csv", 2, 3, "abc")


def _width_not_an_integer(root: Path) -> None:
    _set_field(root / TRAIN / "00000/GT-00000.csv", 3, 1, "30.5")


def _test_class_43(root: Path) -> None:
    _set_field(root / "GT-final_test.csv", 3, 7, "43")


def _class_of_another_folder(root: Path) -> None:
    _set_field(root / TRAIN / "00020/GT-00020.csv", 2, 7, "19")


def _test_image_garbage(root: Path) -> None:
    (root / TEST / "00002.ppm").write_bytes(b"this is not a ppm at all\n" * 50)


def _train_image_truncated(root: Path) -> None:
    path = root / TRAIN / "00000/00000_00000.ppm"
    path.write_bytes(path.read_bytes()[:1000])


def _row_with_commas(root: Path) -> None:
    _edit_csv(root / TRAIN / "00000/GT-00000.csv", 2, lambda f: [",".join(f)], ";")


def _image_without_row(root: Path) -> None:
    folder = root / TRAIN / "00020"
    shutil.copyfile(folder / "00000_00001.ppm", folder / "00000_00002.ppm")


def _roi_outside_image(root: Path) -> None:
    _set_field(root / TRAIN / "00000/GT-00000.csv", 2, 5, "40")


def _row_listed_twice(root: Path) -> None:
    path = root / TRAIN / "00020/GT-00020.csv"
    path.write_bytes(path.read_bytes() + b"00000_00000.ppm;27;26;5;5;22;20;20\r\n")


def _kaggle_image_deleted(root: Path) -> None:
    (root / "Train/0/00000_00000_00001.png").unlink()


def _kaggle_path_outside_test(root: Path) -> None:
    _set_field(root / "Test.csv", 2, 7, "/code/Other/00000.png", ",")


def _kaggle_width_mismatch(root: Path) -> None:
    _set_field(root / "Test.csv", 4, 0, "49", ",")


def _kaggle_file_in_wrong_class_folder(root: Path) -> None:
    _set_field(root / "Train.csv", 2, 7, "/code/Train/19/00020_00000_00000.png", ",")


@dataclass(frozen=True)
class Corruption:
    """A corruption of one row (or image) of a real fixture root, and what the error must say."""

    layout: str
    apply: Callable[[Path], None]
    bad_split: str
    bad_id: str  # the frame id the reject records
    rel: str  # the file the error names, relative to the raw root
    line: int | None  # its line number, where there is one
    says: tuple[str, ...]  # substrings of the error line besides ``rel:line``
    lost_key: str | None = None  # the key of a good image that the bad row stands for, if any

    @property
    def good_keys(self) -> list[str]:
        lost = self.lost_key or f"gtsrb_{self.bad_split}_{self.bad_id}"
        return [k for k in ALL_KEYS if k != lost]


CORRUPTIONS = {
    "width_height_disagree_with_a_resized_image": Corruption(
        "official",
        _resized_copy,
        "train",
        "00000_00000_00001",
        f"{TRAIN}/00000/GT-00000.csv",
        3,
        ("Width/Height", "30x30", "32x32", "00000_00001.ppm", "resized"),
    ),
    "row_names_a_missing_image": Corruption(
        "official",
        _image_deleted,
        "train",
        "00020_00000_00001",
        f"{TRAIN}/00020/GT-00020.csv",
        3,
        ("Filename '00000_00001.ppm'", "missing"),
    ),
    "roi_field_not_a_number": Corruption(
        "official",
        _roi_x1_not_a_number,
        "train",
        "00020_00000_00000",
        f"{TRAIN}/00020/GT-00020.csv",
        2,
        ("Roi.X1", "'abc'", "not a number"),
    ),
    "width_not_an_integer": Corruption(
        "official",
        _width_not_an_integer,
        "train",
        "00000_00000_00001",
        f"{TRAIN}/00000/GT-00000.csv",
        3,
        ("Width", "'30.5'", "not an integer"),
    ),
    "class_id_outside_0_to_42": Corruption(
        "official", _test_class_43, "test", "00001", "GT-final_test.csv", 3, ("ClassId 43", "outside 0..42")
    ),
    "class_id_of_another_class_folder": Corruption(
        "official",
        _class_of_another_folder,
        "train",
        "00020_00000_00000",
        f"{TRAIN}/00020/GT-00020.csv",
        2,
        ("ClassId 19", "class 20", "00020/"),
    ),
    "image_does_not_decode": Corruption(
        "official", _test_image_garbage, "test", "00002", f"{TEST}/00002.ppm", None, ("does not decode",)
    ),
    "truncated_ppm_does_not_decode": Corruption(
        "official",
        _train_image_truncated,
        "train",
        "00000_00000_00000",
        f"{TRAIN}/00000/00000_00000.ppm",
        None,
        ("does not decode",),
    ),
    "row_with_commas_in_a_semicolon_csv": Corruption(
        "official",
        _row_with_commas,
        "train",
        "GT-00000_line2",
        f"{TRAIN}/00000/GT-00000.csv",
        2,
        ("expected 8 ';'-separated fields", OFFICIAL_HEADER, "found 1"),
        lost_key="gtsrb_train_00000_00000_00000",
    ),
    "image_without_a_csv_row": Corruption(
        "official",
        _image_without_row,
        "train",
        "00020_00000_00002",
        f"{TRAIN}/00020/00000_00002.ppm",
        None,
        ("not listed in", "GT-00020.csv"),
    ),
    "roi_outside_the_image": Corruption(
        "official",
        _roi_outside_image,
        "train",
        "00000_00000_00000",
        f"{TRAIN}/00000/GT-00000.csv",
        2,
        ("ROI [5, 6, 40, 25]", "29x30"),
    ),
    "image_listed_twice": Corruption(
        "official",
        _row_listed_twice,
        "train",
        "GT-00020_line4",
        f"{TRAIN}/00020/GT-00020.csv",
        4,
        ("'00000_00000.ppm' is listed again", "first on line 2"),
    ),
    "kaggle_row_names_a_missing_image": Corruption(
        "kaggle",
        _kaggle_image_deleted,
        "train",
        "00000_00000_00001",
        "Train.csv",
        5,
        ("Path '/code/Train/0/00000_00000_00001.png'", "missing"),
    ),
    "kaggle_path_without_its_test_folder": Corruption(
        "kaggle",
        _kaggle_path_outside_test,
        "test",
        "Test_line2",
        "Test.csv",
        2,
        ("'/code/Other/00000.png'", "Test/<5 digits>.png"),
        lost_key="gtsrb_test_00000",
    ),
    "kaggle_width_height_disagree_with_the_image": Corruption(
        "kaggle", _kaggle_width_mismatch, "test", "00002", "Test.csv", 4, ("49x52", "48x52")
    ),
    "kaggle_file_in_another_class_folder": Corruption(
        "kaggle",
        _kaggle_file_in_wrong_class_folder,
        "train",
        "Train_line2",
        "Train.csv",
        2,
        ("Train/19/00020_00000_00000.png", "same class in folder and file name"),
        lost_key="gtsrb_train_00020_00000_00000",
    ),
}


@pytest.mark.parametrize("case", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_bad_row_fails_with_one_error_line_naming_file_and_line(case, cli, tmp_path):
    root = _copy(tmp_path, case.layout)
    result, out = ingest_corrupted(cli, "gtsrb", case.apply, root, tmp_path)
    assert_fails_cleanly(result, out, "gtsrb", file_and_line(root / case.rel, case.line) + ": ", *case.says)


@pytest.mark.parametrize("case", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_bad_row_is_rejected_and_the_rest_converted_under_on_error_skip(case, cli, tmp_path):
    root = _copy(tmp_path, case.layout)
    result, out = ingest_corrupted(cli, "gtsrb", case.apply, root, tmp_path, "--on-error", "skip")
    reject, _ = assert_skipped_cleanly(
        result,
        out,
        "gtsrb",
        split=case.bad_split,
        frame_id=case.bad_id,
        path_suffix=case.rel,
        line=case.line,
        expected_keys=case.good_keys,
    )
    assert Path(reject["path"]) == root / case.rel


def test_error_from_a_worker_process_comes_back_as_one_error_line(cli, official_copy, tmp_path):
    result, out = ingest_corrupted(
        cli,
        "gtsrb",
        CORRUPTIONS["width_height_disagree_with_a_resized_image"].apply,
        official_copy,
        tmp_path,
        workers=2,
    )
    assert_fails_cleanly(result, out, "gtsrb", f"{official_copy / TRAIN / '00000/GT-00000.csv'}:3: ", "32x32")


def test_rejects_from_worker_processes_are_recorded_under_on_error_skip(cli, kaggle_copy, tmp_path):
    result, out = ingest_corrupted(
        cli,
        "gtsrb",
        CORRUPTIONS["kaggle_row_names_a_missing_image"].apply,
        kaggle_copy,
        tmp_path,
        "--on-error",
        "skip",
        workers=2,
    )
    assert result.code == 0, result.err
    [reject] = read_rejects(out, "gtsrb")
    assert (reject["id"], reject["line"]) == ("00000_00000_00001", 5)
    assert len(read_manifest(out, "gtsrb")) == 6


# ---- layout-level errors: under --on-error skip too -------------------------------------------


def _drop_column(path: Path, column: str, delimiter: str) -> None:
    data = path.read_bytes().decode()
    end = "\r\n" if "\r\n" in data else "\n"
    rows = [ln.split(delimiter) for ln in data.split(end) if ln]
    index = rows[0].index(column)
    path.write_bytes("".join(delimiter.join(r[:index] + r[index + 1 :]) + end for r in rows).encode())


def _change_delimiter(path: Path, old: str, new: str) -> None:
    path.write_bytes(path.read_bytes().replace(old.encode(), new.encode()))


@dataclass(frozen=True)
class LayoutCase:
    layout: str | None  # fixture root to copy; None = an empty folder
    apply: Callable[[Path], None]
    names: Callable[[Path], str]  # the text the error line starts with (after "error: ")
    says: tuple[str, ...]


LAYOUT_CASES = {
    "csv_without_a_column": LayoutCase(
        "official",
        lambda r: _drop_column(r / TRAIN / "00020/GT-00020.csv", "Roi.Y2", ";"),
        lambda r: f"{r / TRAIN / '00020/GT-00020.csv'}:1: ",
        ("lacks Roi.Y2", OFFICIAL_HEADER, "';'-separated"),
    ),
    "comma_csv_where_semicolons_are_expected": LayoutCase(
        "official",
        lambda r: _change_delimiter(r / TRAIN / "00000/GT-00000.csv", ";", ","),
        lambda r: f"{r / TRAIN / '00000/GT-00000.csv'}:1: ",
        ("is ','-separated", OFFICIAL_HEADER, "';'-separated"),
    ),
    "semicolon_csv_where_commas_are_expected": LayoutCase(
        "kaggle",
        lambda r: _change_delimiter(r / "Train.csv", ",", ";"),
        lambda r: f"{r / 'Train.csv'}:1: ",
        ("is ';'-separated", KAGGLE_HEADER, "','-separated"),
    ),
    "kaggle_csv_without_class_id": LayoutCase(
        "kaggle",
        lambda r: _drop_column(r / "Test.csv", "ClassId", ","),
        lambda r: f"{r / 'Test.csv'}:1: ",
        ("lacks ClassId", KAGGLE_HEADER),
    ),
    "class_folder_without_its_csv": LayoutCase(
        "official",
        lambda r: (r / TRAIN / "00020/GT-00020.csv").unlink(),
        lambda r: f"{r / TRAIN / '00020/GT-00020.csv'}: missing",
        (OFFICIAL_HEADER,),
    ),
    "test_images_without_any_csv": LayoutCase(
        "official",
        lambda r: [(r / TEST / "GT-final_test.test.csv").unlink(), (r / "GT-final_test.csv").unlink()],
        lambda r: f"{r / TEST / 'GT-final_test.test.csv'}: missing",
        ("GT-final_test.csv", "ClassId"),
    ),
    "kaggle_csv_without_its_folder": LayoutCase(
        "kaggle", lambda r: shutil.rmtree(r / "Test"), lambda r: f"{r / 'Test'}: missing folder", ("Test.csv",)
    ),
    "empty_raw_root": LayoutCase(
        None,
        lambda r: None,
        lambda r: f"{r}: no GTSRB layout found",
        (
            "GTSRB/Final_Training/Images/<class>/GT-<class>.csv",
            "GTSRB/Final_Test/Images/",
            "official",
            "Train.csv",
            "Test.csv",
            "Kaggle",
        ),
    ),
    "both_layouts_in_one_root": LayoutCase(
        "official",
        lambda r: shutil.copyfile(fixture_path("gtsrb", "kaggle", "Train.csv"), r / "Train.csv"),
        lambda r: f"{r}: holds both",
        ("GTSRB/", "Train.csv", "one of them"),
    ),
}


@pytest.mark.parametrize("on_error", ["fail", "skip"])
@pytest.mark.parametrize("case", LAYOUT_CASES.values(), ids=LAYOUT_CASES.keys())
def test_layout_problem_fails_with_one_error_line_under_either_mode(case, on_error, cli, tmp_path):
    if case.layout is None:
        root = tmp_path / "empty"
        root.mkdir()
    else:
        root = _copy(tmp_path, case.layout)
    case.apply(root)
    out = tmp_path / "shards"
    line = assert_fails_before_writing(
        ingest_cli(cli, "gtsrb", root, out, "--on-error", on_error), out, "gtsrb", *case.says
    )
    assert line.startswith("error: " + case.names(root)), line


def test_passing_the_gtsrb_folder_itself_points_at_its_parent(cli, official_copy, tmp_path):
    line = ingest_cli(cli, "gtsrb", official_copy / "GTSRB", tmp_path / "shards").one_error_line()
    assert f"{official_copy / 'GTSRB'}: no GTSRB layout found" in line
    assert f"did you mean {official_copy}?" in line


def test_passing_a_parent_folder_points_at_the_dataset_below(cli, tmp_path):
    parent = tmp_path / "downloads"
    root = _copy(parent, "kaggle")
    line = ingest_cli(cli, "gtsrb", parent, tmp_path / "shards").one_error_line()
    assert f"did you mean {root}?" in line
