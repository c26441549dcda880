"""Bad TuSimple raw input and options: one clear ``error:`` line naming the file (and line) and
what was expected, a non-zero exit, no traceback and nothing half-written; under
``--on-error skip`` the bad label line is one record in ``rejects.jsonl`` and the rest converted.

The raw root is built from the real first lines of the label files (``category_variant``: with
the ``classes`` key, both ``h_samples`` grids, both key orders): four training lines in three
files and one test line. The real labelled frame stands in for every image (the error paths do
not look at the pixels).
"""

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
    fixture_path,
    ingest_cli,
    ingest_corrupted,
    read_manifest,
    read_rejects,
    read_report,
)

#: label file in the raw root -> (category_variant source, split folder of its raw_file paths)
LABEL_FILES = {
    "train_set/label_data_0313.json": ("label_data_0313.head1.json", "train_set"),
    "train_set/label_data_0531.json": ("label_data_0531.head1.json", "train_set"),
    "train_set/label_data_0601.json": ("label_data_0601.head2.json", "train_set"),
    "test_label.json": ("test_tasks_0627.head1.json", "test_set"),
}
FRAMES = {  # frame id -> split
    "clips/0313-1/6040/20": "train",
    "clips/0531/1492626287507231547/20": "train",
    "clips/0601/1494453497604532231/20": "train",
    "clips/0601/1494453503601902751/20": "train",
    "clips/0530/1492626760788443246_0/20": "test",
}


@pytest.fixture
def raw(tmp_path) -> Path:
    root = tmp_path / "tusimple_raw"
    image = fixture_path("tusimple", "train_set", "clips", "0601", "1494453497604532231", "20.jpg")
    for target, (source, split_dir) in LABEL_FILES.items():
        text = fixture_path("tusimple", "category_variant", source).read_text()
        (root / target).parent.mkdir(parents=True, exist_ok=True)
        (root / target).write_text(text)
        for line in text.splitlines():
            dst = root / split_dir / json.loads(line)["raw_file"]
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(image, dst)
    return root


# ---- helpers ----------------------------------------------------------------------------------


def _edit_line(path: Path, lineno: int, edit: Callable[[str], str]) -> None:
    """Replace line ``lineno`` (1-based) of a JSON-lines file by ``edit(line)``."""
    lines = path.read_text().splitlines()
    lines[lineno - 1] = edit(lines[lineno - 1])
    path.write_text("\n".join(lines) + "\n")


def _edit_doc(path: Path, lineno: int, edit: Callable[[dict], None]) -> None:
    def change(line: str) -> str:
        doc = json.loads(line)
        edit(doc)
        return json.dumps(doc)

    _edit_line(path, lineno, change)


def _image(root: Path, frame: str) -> Path:
    return root / ("test_set" if FRAMES[frame] == "test" else "train_set") / f"{frame}.jpg"


# ---- per-line corruptions ---------------------------------------------------------------------


def _malformed_json(root: Path) -> None:
    _edit_line(root / "train_set/label_data_0601.json", 2, lambda line: line[:700])  # cut mid-lane


def _malformed_test_line(root: Path) -> None:
    _edit_line(root / "test_label.json", 1, lambda line: line.replace('"h_samples":', '"h_samples"', 1))


def _lane_longer(root: Path) -> None:
    _edit_doc(root / "train_set/label_data_0601.json", 1, lambda d: d["lanes"][1].append(-2))


def _lane_shorter(root: Path) -> None:
    _edit_doc(root / "train_set/label_data_0313.json", 1, lambda d: d["lanes"][0].pop())


def _image_missing(root: Path) -> None:
    _image(root, "clips/0601/1494453503601902751/20").unlink()


def _image_garbage(root: Path) -> None:
    _image(root, "clips/0531/1492626287507231547/20").write_bytes(b"this is not a jpeg at all\n" * 200)


def _image_truncated(root: Path) -> None:
    path = _image(root, "clips/0313-1/6040/20")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _without_lanes(root: Path) -> None:
    _edit_doc(root / "train_set/label_data_0531.json", 1, lambda d: d.pop("lanes"))


def _without_h_samples(root: Path) -> None:
    _edit_doc(root / "train_set/label_data_0601.json", 2, lambda d: d.pop("h_samples"))


def _without_raw_file(root: Path) -> None:
    _edit_doc(root / "train_set/label_data_0313.json", 1, lambda d: d.pop("raw_file"))


def _h_samples_not_increasing(root: Path) -> None:
    def swap(doc):
        doc["h_samples"][5], doc["h_samples"][6] = doc["h_samples"][6], doc["h_samples"][5]

    _edit_doc(root / "train_set/label_data_0313.json", 1, swap)


def _x_not_a_number(root: Path) -> None:
    def edit(doc):
        doc["lanes"][2][20] = "abc"

    _edit_doc(root / "train_set/label_data_0601.json", 1, edit)


@dataclass(frozen=True)
class Corruption(FrameCorruption):
    """A corruption of one label line (or its image), and what the error must say; ``bad_id`` is the
    frame id in rejects.jsonl."""

    lost: str = ""  # the frame of the bad line, when its id cannot be read from it

    @property
    def frame(self) -> str:
        return self.lost or self.bad_id

    @property
    def split(self) -> str:
        return FRAMES[self.frame]


CORRUPTIONS = {
    "malformed_json_line": Corruption(
        _malformed_json,
        "label_data_0601.json:2",
        "train_set/label_data_0601.json",
        2,
        (
            "malformed JSON line (Expecting ',' delimiter at column 701)",
            "expected one JSON object per line with lanes, h_samples, raw_file",
            '\'{"raw_file": "clips/0601/1494453503601902751/20.jpg"',
        ),
        lost="clips/0601/1494453503601902751/20",
    ),
    "malformed_test_label_line": Corruption(
        _malformed_test_line,
        "test_label.json:1",
        "test_label.json",
        1,
        ("malformed JSON line", "Expecting ':' delimiter at column 1082"),
        lost="clips/0530/1492626760788443246_0/20",
    ),
    "lane_longer_than_h_samples": Corruption(
        _lane_longer,
        "clips/0601/1494453497604532231/20",
        "train_set/label_data_0601.json",
        1,
        ("lane 1 has 57 x values but h_samples has 56 rows", "expected one x per row, -2 where"),
    ),
    "lane_shorter_than_h_samples": Corruption(
        _lane_shorter,
        "clips/0313-1/6040/20",
        "train_set/label_data_0313.json",
        1,
        ("lane 0 has 47 x values but h_samples has 48 rows",),
    ),
    "raw_file_image_missing": Corruption(
        _image_missing,
        "clips/0601/1494453503601902751/20",
        "train_set/clips/0601/1494453503601902751/20.jpg",
        None,
        ("image missing", "raw_file of label_data_0601.json:2"),
    ),
    "image_does_not_decode": Corruption(
        _image_garbage,
        "clips/0531/1492626287507231547/20",
        "train_set/clips/0531/1492626287507231547/20.jpg",
        None,
        ("does not decode as an image", "raw_file of label_data_0531.json:1"),
    ),
    "image_truncated": Corruption(
        _image_truncated,
        "clips/0313-1/6040/20",
        "train_set/clips/0313-1/6040/20.jpg",
        None,
        ("does not decode as an image",),
    ),
    "line_without_lanes": Corruption(
        _without_lanes,
        "clips/0531/1492626287507231547/20",
        "train_set/label_data_0531.json",
        1,
        ("lacks 'lanes'", "a TuSimple label line has lanes, h_samples, raw_file", "found classes, h_samples"),
    ),
    "line_without_h_samples": Corruption(
        _without_h_samples,
        "clips/0601/1494453503601902751/20",
        "train_set/label_data_0601.json",
        2,
        ("lacks 'h_samples'",),
    ),
    "line_without_raw_file": Corruption(
        _without_raw_file,
        "label_data_0313.json:1",
        "train_set/label_data_0313.json",
        1,
        ("lacks 'raw_file'",),
        lost="clips/0313-1/6040/20",
    ),
    "h_samples_not_increasing": Corruption(
        _h_samples_not_increasing,
        "clips/0313-1/6040/20",
        "train_set/label_data_0313.json",
        1,
        ("h_samples must be strictly increasing", "h_samples[6] = 290 follows 300"),
    ),
    "x_not_a_number": Corruption(
        _x_not_a_number,
        "clips/0601/1494453497604532231/20",
        "train_set/label_data_0601.json",
        1,
        ("lane 2: x at row 360 is 'abc'", "expected a finite number (-2 = no point)"),
    ),
}


@pytest.mark.parametrize("case", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_bad_line_fails_with_one_error_line_naming_file_line_and_expectation(case, cli, raw, tmp_path):
    result, out = ingest_corrupted(cli, "tusimple", case.apply, raw, tmp_path)
    assert_fails_cleanly(
        result, out, "tusimple", "error: " + file_and_line(raw / case.rel, case.line) + ": ", *case.says
    )


@pytest.mark.parametrize("case", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_bad_line_is_rejected_and_the_rest_converted_under_on_error_skip(case, cli, raw, tmp_path):
    result, out = ingest_corrupted(cli, "tusimple", case.apply, raw, tmp_path, "--on-error", "skip")
    reject, rows = assert_skipped_cleanly(
        result,
        out,
        "tusimple",
        split=case.split,
        frame_id=case.bad_id,
        path_suffix=case.rel,
        line=case.line,
        expected_keys=[f for f in FRAMES if f != case.frame],
        column="id",
        error_says=case.says[:1],
    )
    assert Path(reject["path"]) == raw / case.rel
    assert all(r["has_lane"] and r["lane_count"] == 4 for r in rows)
    assert read_report(out, "tusimple")["splits"][case.split]["rejects"] == 1


def test_malformed_line_from_a_worker_process_is_one_error_line_or_one_reject(cli, raw, tmp_path):
    CORRUPTIONS["malformed_json_line"].apply(raw)
    line = ingest_cli(cli, "tusimple", raw, tmp_path / "fail", workers=2).one_error_line()
    assert f"{raw / 'train_set/label_data_0601.json'}:2: malformed JSON line" in line
    result = ingest_cli(cli, "tusimple", raw, tmp_path / "skip", "--on-error", "skip", workers=2)
    assert result.code == 0, result.err
    [reject] = read_rejects(tmp_path / "skip", "tusimple")
    assert (reject["id"], reject["line"]) == ("label_data_0601.json:2", 2)
    assert len(read_manifest(tmp_path / "skip", "tusimple")) == 4


def test_rerun_after_fixing_the_bad_line_resumes_without_loss_or_duplicates(cli, raw, tmp_path):
    path = raw / "train_set/label_data_0601.json"
    good = path.read_text()
    result, out = ingest_corrupted(
        cli, "tusimple", CORRUPTIONS["malformed_json_line"].apply, raw, tmp_path, "--shard-size", 1
    )
    line = result.one_error_line()
    assert "label_data_0601.json:2" in line
    assert (out / "tusimple" / "train-000000.tar").exists()  # frames before the bad line are kept
    path.write_text(good)
    result = ingest_cli(cli, "tusimple", raw, out, "--shard-size", 1)
    assert result.code == 0, result.err
    keys = [r["key"] for r in read_manifest(out, "tusimple")]
    assert sorted(keys) == sorted(f"tusimple_{s}_{f.replace('/', '_')}" for f, s in FRAMES.items())
    check = cli("validate", out)
    assert check.code == 0, check.out + check.err


# ---- layout errors ----------------------------------------------------------------------------


def test_empty_folder_names_the_folder_and_the_expected_layout(cli, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "shards"
    result = ingest_cli(cli, "tusimple", empty, out)
    assert_fails_cleanly(
        result,
        out,
        "tusimple",
        f"error: {empty}: no TuSimple split found (expected ",
        "train_set/",
        "clips/",
        "label_data_*.json",
        "test_set/",
        "test_label.json",
    )


def test_parent_of_the_dataset_root_suggests_the_folder_meant(cli, raw, tmp_path):
    line = ingest_cli(cli, "tusimple", raw.parent, tmp_path / "shards").one_error_line()
    assert f"did you mean {raw}?" in line


def test_train_set_without_label_files_names_the_pattern(cli, raw, tmp_path):
    for path in (raw / "train_set").glob("label_data_*.json"):
        path.unlink()
    line = ingest_cli(cli, "tusimple", raw, tmp_path / "shards").one_error_line()
    assert f"{raw / 'train_set'}: no label_data_*.json (expected" in line


def test_train_set_without_clips_names_the_missing_folder(cli, raw, tmp_path):
    shutil.rmtree(raw / "train_set" / "clips")
    line = ingest_cli(cli, "tusimple", raw, tmp_path / "shards").one_error_line()
    assert f"{raw / 'train_set' / 'clips'}: missing folder (expected" in line


def test_test_label_json_without_test_set_names_the_missing_folder(cli, raw, tmp_path):
    shutil.rmtree(raw / "test_set")
    line = ingest_cli(cli, "tusimple", raw, tmp_path / "shards").one_error_line()
    assert f"{raw / 'test_set'}: missing folder" in line
    assert "test_label.json" in line


def test_two_different_test_label_files_are_refused(cli, raw, tmp_path):
    (raw / "test_set" / "test_label.json").write_text("{}\n")
    line = ingest_cli(cli, "tusimple", raw, tmp_path / "shards").one_error_line()
    assert f"{raw / 'test_label.json'} and {raw / 'test_set' / 'test_label.json'} differ" in line


# ---- bad options ------------------------------------------------------------------------------

BAD_OPTIONS = {
    "lane_thickness_zero": (["--lane-thickness", "0"], ("--lane-thickness", "0", "1.0<=x<100.0")),
    "lane_thickness_not_a_number": (["--lane-thickness", "thick"], ("--lane-thickness", "'thick'")),
    "val_fraction_above_one": (["--val-fraction", "1.5"], ("--val-fraction", "1.5", "0.0<=x<1.0")),
}


@pytest.mark.parametrize("args, says", BAD_OPTIONS.values(), ids=BAD_OPTIONS.keys())
def test_bad_option_fails_with_one_error_line(args, says, cli, raw, tmp_path):
    out = tmp_path / "shards"
    assert_fails_before_writing(ingest_cli(cli, "tusimple", raw, out, *args), out, "tusimple", *says)
