"""Bad raw input and bad options: one clear ``error:`` line, a non-zero exit, no traceback and
nothing half-written; under ``--on-error skip`` the bad frame is recorded and the rest converted."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import (
    FrameCorruption,
    assert_fails_before_writing,
    assert_fails_cleanly,
    assert_skipped_cleanly,
    file_and_line,
    ingest_cli,
    ingest_corrupted,
    read_manifest,
    read_rejects,
)

FRAMES = ("000000", "000001")
LABEL_TYPES = ("Car", "Van", "Truck", "Pedestrian", "Person_sitting", "Cyclist", "Tram", "Misc", "DontCare")


# ---- helpers ----------------------------------------------------------------------------------


def _edit_line(path: Path, lineno: int, edit: Callable[[list[str]], list[str]]) -> None:
    """Replace the fields of line ``lineno`` (1-based) of a text file by ``edit(fields)``."""
    lines = path.read_text().splitlines()
    lines[lineno - 1] = " ".join(edit(lines[lineno - 1].split()))
    path.write_text("\n".join(lines) + "\n")


# ---- per-frame corruptions --------------------------------------------------------------------


def _label_14_fields(root: Path) -> None:
    _edit_line(root / "training/label_2/000001.txt", 2, lambda f: f[:-1])


def _label_non_numeric(root: Path) -> None:
    _edit_line(root / "training/label_2/000001.txt", 3, lambda f: [*f[:4], "abc", *f[5:]])  # "left"


def _label_unknown_type(root: Path) -> None:
    _edit_line(root / "training/label_2/000001.txt", 4, lambda f: ["Spaceship", *f[1:]])


def _calib_without_p2(root: Path) -> None:
    path = root / "training/calib/000000.txt"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(ln for ln in lines if not ln.startswith("P2:")))


def _velodyne_truncated(root: Path) -> None:
    path = root / "training/velodyne/000001.bin"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 5])  # 5 bytes short of a whole number of points


def _image_garbage(root: Path) -> None:
    (root / "training/image_2/000000.png").write_bytes(b"this is not a png at all\n" * 200)


def _image_truncated(root: Path) -> None:
    path = root / "training/image_2/000000.png"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _image_missing(root: Path) -> None:
    (root / "training/image_2/000001.png").unlink()


@dataclass(frozen=True)
class Corruption(FrameCorruption):
    """A corruption of one frame of the real sample, and what the error must say."""

    @property
    def good_id(self) -> str:
        return next(f for f in FRAMES if f != self.bad_id)

    @property
    def where(self) -> str:
        return file_and_line(self.rel, self.line)


CORRUPTIONS = {
    "label_line_with_14_fields": Corruption(
        _label_14_fields, "000001", "training/label_2/000001.txt", 2, ("15", "fields", "found 14")
    ),
    "label_field_not_a_number": Corruption(
        _label_non_numeric, "000001", "training/label_2/000001.txt", 3, ("left", "'abc'", "not a number")
    ),
    "calib_without_p2": Corruption(_calib_without_p2, "000000", "training/calib/000000.txt", None, ("P2", "missing")),
    "velodyne_size_not_multiple_of_16": Corruption(
        _velodyne_truncated, "000001", "training/velodyne/000001.bin", None, ("multiple of 16",)
    ),
    "image_garbage_bytes": Corruption(
        _image_garbage, "000000", "training/image_2/000000.png", None, ("does not decode",)
    ),
    "image_truncated_png": Corruption(
        _image_truncated, "000000", "training/image_2/000000.png", None, ("does not decode",)
    ),
    "image_missing_but_label_exists": Corruption(
        _image_missing, "000001", "training/image_2/000001.png", None, ("missing",)
    ),
    "label_unknown_object_type": Corruption(
        _label_unknown_type,
        "000001",
        "training/label_2/000001.txt",
        4,
        ("unknown object type", "'Spaceship'", *LABEL_TYPES),
    ),
}


@pytest.mark.parametrize("case", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_bad_frame_fails_with_one_error_line_naming_file_and_line(case, cli, kitti_copy, tmp_path):
    result, out = ingest_corrupted(cli, "kitti", case.apply, kitti_copy, tmp_path)
    assert_fails_cleanly(result, out, "kitti", file_and_line(kitti_copy / case.rel, case.line), *case.says)


def test_error_from_a_worker_process_comes_back_as_one_error_line(cli, kitti_copy, tmp_path):
    case = CORRUPTIONS["label_line_with_14_fields"]
    result, out = ingest_corrupted(cli, "kitti", case.apply, kitti_copy, tmp_path, workers=2)
    assert_fails_cleanly(result, out, "kitti", "label_2/000001.txt:2", "15", "found 14")


@pytest.mark.parametrize("case", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_bad_frame_is_rejected_and_the_other_converted_under_on_error_skip(case, cli, kitti_copy, tmp_path):
    result, out = ingest_corrupted(cli, "kitti", case.apply, kitti_copy, tmp_path, "--on-error", "skip")
    _, rows = assert_skipped_cleanly(
        result,
        out,
        "kitti",
        split="train",
        frame_id=case.bad_id,
        path_suffix=case.rel,
        line=case.line,
        expected_keys=[f"kitti_train_{case.good_id}"],
    )
    assert [r["id"] for r in rows] == [case.good_id]


def test_rejects_from_worker_processes_are_recorded_under_on_error_skip(cli, kitti_copy, tmp_path):
    result, out = ingest_corrupted(
        cli,
        "kitti",
        CORRUPTIONS["velodyne_size_not_multiple_of_16"].apply,
        kitti_copy,
        tmp_path,
        "--on-error",
        "skip",
        workers=2,
    )
    assert result.code == 0, result.err
    [reject] = read_rejects(out, "kitti")
    assert Path(reject["path"]).as_posix().endswith("training/velodyne/000001.bin")
    assert [r["id"] for r in read_manifest(out, "kitti")] == ["000000"]


# ---- layout errors ----------------------------------------------------------------------------


@pytest.mark.parametrize("folder", ["label_2", "calib"])
def test_missing_required_folder_is_named_as_missing(folder, cli, kitti_copy, tmp_path):
    shutil.rmtree(kitti_copy / "training" / folder)
    out = tmp_path / "shards"
    result = ingest_cli(cli, "kitti", kitti_copy, out)
    assert_fails_cleanly(result, out, "kitti", f"{kitti_copy / 'training' / folder}: missing folder", "expected")


def test_empty_dataset_folder_names_the_folder_and_the_expected_layout(cli, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "shards"
    result = ingest_cli(cli, "kitti", empty, out)
    assert_fails_cleanly(result, out, "kitti", f"{empty}:", "expected", "training/", "image_2", "label_2", "calib")


# ---- resume after fixing the input ------------------------------------------------------------


def test_rerun_after_fixing_the_bad_file_resumes_without_loss_or_duplicates(cli, kitti_copy, kitti_real, tmp_path):
    args = ("--shard-size", "1")
    result, out = ingest_corrupted(
        cli, "kitti", CORRUPTIONS["label_line_with_14_fields"].apply, kitti_copy, tmp_path, *args
    )
    assert_fails_cleanly(result, out, "kitti", "label_2/000001.txt:2")
    assert (out / "kitti" / "train-000000.tar").exists()  # the good frame's shard completed

    shutil.copyfile(kitti_real / "training/label_2/000001.txt", kitti_copy / "training/label_2/000001.txt")
    result = ingest_cli(cli, "kitti", kitti_copy, out, *args)
    assert result.code == 0, result.err
    keys = [r["key"] for r in read_manifest(out, "kitti")]
    assert sorted(keys) == ["kitti_train_000000", "kitti_train_000001"]
    assert len(set(keys)) == len(keys)
    assert not (out / "kitti" / ".ingest").exists()
    check = cli("validate", out)
    assert check.code == 0, check.out + check.err


# ---- bad options ------------------------------------------------------------------------------


def _taxonomy_file(tmp_path: Path, mapping: dict) -> Path:
    path = tmp_path / "taxonomy.json"
    path.write_text(json.dumps({"det": {"kitti": mapping}}))
    return path


BAD_OPTIONS = {
    "shard_size_unknown_unit": (lambda tmp: ["--shard-size", "12XB"], ("--shard-size", "12XB", "expected", "256MB")),
    "jpeg_quality_zero": (lambda tmp: ["--jpeg-quality", "0"], ("--jpeg-quality", "0")),
    "split_not_a_split": (lambda tmp: ["--split", "bogus"], ("--split", "bogus")),
    "taxonomy_unknown_kitti_class": (
        lambda tmp: ["--taxonomy", _taxonomy_file(tmp, {"Spaceship": "car"})],
        ("taxonomy.json", "unknown native class", "'Spaceship'", "Car"),
    ),
    "taxonomy_unknown_unified_class": (
        lambda tmp: ["--taxonomy", _taxonomy_file(tmp, {"Misc": "unicorn"})],
        ("taxonomy.json", "unknown class", "'unicorn'", "other_vehicle"),
    ),
    "val_fraction_above_one": (lambda tmp: ["--val-fraction", "1.5"], ("--val-fraction", "1.5", "0.0<=x<1.0")),
}


@pytest.mark.parametrize("make_args, says", BAD_OPTIONS.values(), ids=BAD_OPTIONS.keys())
def test_bad_option_fails_with_one_error_line(make_args, says, cli, kitti_real, tmp_path):
    out = tmp_path / "shards"
    result = ingest_cli(cli, "kitti", kitti_real, out, *make_args(tmp_path))
    assert_fails_before_writing(result, out, "kitti", *says)


def test_requesting_a_split_with_no_frames_is_one_clear_error(cli, kitti_real, tmp_path):
    """The real sample has only training frames and no --val-fraction: there is no val split."""
    out = tmp_path / "shards"
    line = cli("ingest", "kitti", kitti_real, "--to", out, "--split", "val", "--workers", 1).one_error_line()
    assert "no 'val' frames found" in line and "splits present: train" in line
    assert not (out / "kitti").exists()
