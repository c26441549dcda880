"""The TuSimple converter and synthetic writer.

The real labelled frame of ``fixtures/tusimple`` is checked against LaneNet's ground truth of the
same frame (bit-exact binary mask, same pixels per lane instance); the real first lines of all
four label files check both ``h_samples`` grids and the ``classes`` key; the synthetic dataset
checks the native layout and the consistency between images and polylines.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import fixture_path, read_manifest

from mtl_data.errors import LayoutError
from mtl_data.ingest.registry import CONVERTERS
from mtl_data.ingest.resize import resize_sample
from mtl_data.ingest.tusimple import (
    TuSimpleConverter,
    TuSimpleOptions,
    order_left_to_right,
)
from mtl_data.schema.lanes import NO_POINT, rasterize_lanes
from mtl_data.schema.validate import validate
from mtl_data.shards.codec import decode_sample, encode_sample
from mtl_data.shards.reader import ShardSet
from mtl_data.synth.registry import SYNTHESIZERS
from mtl_data.synth.tusimple import synth_tusimple

CLIP = "0601/1494453497604532231"
RAW_FILE = f"clips/{CLIP}/20.jpg"
KEY = "tusimple_train_clips_0601_1494453497604532231_20"
GRID_48 = list(range(240, 720, 10))
GRID_56 = list(range(160, 720, 10))


# ---- helpers ----------------------------------------------------------------------------------


def label_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_lines(path: Path, docs: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))


def real_line() -> dict:
    return label_lines(fixture_path("tusimple", "train_set", "label_data_0601.json"))[0]


def train_root(tmp_path: Path, docs: list[dict], image: Path | None = None) -> Path:
    """``tmp_path/raw/train_set`` with ``label_data_0601.json`` = ``docs`` and the real frame at
    every ``raw_file``."""
    root = tmp_path / "raw"
    write_lines(root / "train_set" / "label_data_0601.json", docs)
    image = image or fixture_path("tusimple", "train_set", "clips", *CLIP.split("/"), "20.jpg")
    for doc in docs:
        dst = root / "train_set" / doc["raw_file"]
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(image, dst)
    return root


def convert_all(root: Path, **options) -> dict[str, object]:
    """Every frame of ``root`` converted, by sample key."""
    conv = TuSimpleConverter(root, TuSimpleOptions(**options))
    samples = [conv.convert(f) for f in conv.frames()]
    return {s.key: s for s in samples}


def components(mask: np.ndarray) -> int:
    """Number of 8-connected components of a boolean mask."""
    return cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)[0] - 1


@pytest.fixture
def real_sample():
    conv = TuSimpleConverter(fixture_path("tusimple"))
    [frame] = conv.frames()
    return conv.convert(frame)


# ---- the real frame against LaneNet's ground truth --------------------------------------------


def test_lists_the_labelled_real_frame_and_leaves_out_the_unlabelled_test_set(caplog):
    root = fixture_path("tusimple")
    with caplog.at_level(logging.WARNING, logger="mtl_data.ingest.tusimple"):
        conv = TuSimpleConverter(root)
        conv.check_layout()
        frames = conv.frames()
    assert [(f.split, f.id) for f in frames] == [("train", "clips/0601/1494453497604532231/20")]
    assert frames[0].paths["image"] == root / "train_set" / RAW_FILE
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "test_set" in said[0] and "test_label.json" in said[0], said
    sample = conv.convert(frames[0])
    assert (sample.key, sample.split, sample.sequence) == (KEY, "train", CLIP)
    assert sample.tasks == ("lane",) and sample.K is None and sample.timestamp_us is None


def test_binary_lane_mask_equals_lanenet_gt_binary_bit_exactly(real_sample):
    gt = cv2.imread(
        str(fixture_path("tusimple", "lanenet_example", "gt_binary_image", "0000.png")), cv2.IMREAD_UNCHANGED
    )
    assert gt.shape == real_sample.lane.mask.shape == (720, 1280)
    assert set(np.unique(gt).tolist()) == {0, 255}
    np.testing.assert_array_equal(real_sample.lane.mask > 0, gt > 0)


def test_instances_are_lanenet_lanes_numbered_left_to_right_with_the_same_pixels(real_sample):
    gt = cv2.imread(
        str(fixture_path("tusimple", "lanenet_example", "gt_instance_image", "0000.png")), cv2.IMREAD_UNCHANGED
    )
    doc = real_line()
    # LaneNet: value = json_index * 50 + 20. Left to right: every lane has a point on row 420.
    row = doc["h_samples"].index(420)
    at_420 = [lane[row] for lane in doc["lanes"]]
    assert at_420 == [35, 447, 861, 1257]
    left_to_right = np.argsort(at_420)
    assert set(np.unique(real_sample.lane.mask).tolist()) == {0, 1, 2, 3, 4}
    for rank, json_index in enumerate(left_to_right):
        ours = real_sample.lane.mask == rank + 1
        np.testing.assert_array_equal(ours, gt == json_index * 50 + 20)
        assert components(ours) == 1


def test_lane_json_keeps_the_native_polylines_in_id_order(real_sample):
    doc = real_line()
    lane = real_sample.lane
    np.testing.assert_array_equal(lane.h_samples, doc["h_samples"])
    np.testing.assert_array_equal(lane.xs, doc["lanes"])  # already left to right in this line
    assert lane.thickness == 5.0
    members = dict(encode_sample(real_sample, "png"))
    assert json.loads(members["lane.json"]) == {
        "h_samples": [float(v) for v in doc["h_samples"]],
        "lanes": [[float(v) for v in ln] for ln in doc["lanes"]],
        "thickness": 5.0,
    }
    back = decode_sample(real_sample.key, members)
    np.testing.assert_array_equal(back.lane.mask, lane.mask)
    np.testing.assert_array_equal(back.lane.xs, lane.xs)
    assert back.sequence == CLIP


def test_image_is_the_raw_file_decoded_at_its_own_size(real_sample):
    jpg = fixture_path("tusimple", "train_set", "clips", *CLIP.split("/"), "20.jpg")
    expected = cv2.cvtColor(cv2.imread(str(jpg), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(real_sample.image, expected)
    assert real_sample.orig_size == (720, 1280)
    assert validate(real_sample) == []


def test_max_side_redraws_the_scaled_polylines_instead_of_resampling_the_mask(real_sample):
    small = resize_sample(real_sample, 640)
    assert small.size == (360, 640)
    xs = np.asarray(real_line()["lanes"], dtype=np.float64)
    scaled = np.where(xs == -2, -2.0, (xs + 0.5) * 0.5 - 0.5)  # pixel-centre convention
    np.testing.assert_array_equal(small.lane.xs, scaled)
    np.testing.assert_array_equal(small.lane.h_samples, (np.array(GRID_56) + 0.5) * 0.5 - 0.5)
    assert small.lane.thickness == 2.5
    expected = rasterize_lanes(scaled, small.lane.h_samples, (360, 640), 2.5)
    np.testing.assert_array_equal(small.lane.mask, expected)
    resampled = cv2.resize(real_sample.lane.mask, (640, 360), interpolation=cv2.INTER_NEAREST_EXACT)
    assert not np.array_equal(small.lane.mask, resampled)
    for lane_id in range(1, 5):  # still one unbroken line per lane
        assert components(small.lane.mask == lane_id) == 1
    assert validate(small) == []


def test_lane_thickness_option_draws_wider_lines_and_is_recorded(tmp_path):
    root = fixture_path("tusimple", "train_set")
    [thin] = convert_all(root).values()
    [wide] = convert_all(root, lane_thickness=9.0).values()
    assert wide.lane.thickness == 9.0
    assert np.all(wide.lane.mask[thin.lane.mask > 0] > 0)
    assert np.count_nonzero(wide.lane.mask) > 1.5 * np.count_nonzero(thin.lane.mask)
    np.testing.assert_array_equal(wide.lane.xs, thin.lane.xs)


# ---- the real first lines of all four label files ---------------------------------------------


def test_real_first_lines_of_every_label_file_convert_with_both_grids(tmp_path):
    variant = fixture_path("tusimple", "category_variant")
    image = fixture_path("tusimple", "train_set", "clips", *CLIP.split("/"), "20.jpg")
    root = tmp_path / "raw"
    for name, target in (
        ("label_data_0313.head1.json", "train_set/label_data_0313.json"),
        ("label_data_0531.head1.json", "train_set/label_data_0531.json"),
        ("label_data_0601.head2.json", "train_set/label_data_0601.json"),
        ("test_tasks_0627.head1.json", "test_label.json"),
    ):
        docs = label_lines(variant / name)
        assert all("classes" in d for d in docs)  # the unknown key is there to be tolerated
        write_lines(root / target, docs)
        for doc in docs:
            dst = root / ("test_set" if target == "test_label.json" else "train_set") / doc["raw_file"]
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(image, dst)
    samples = convert_all(root)
    assert sorted((s.split, s.sequence) for s in samples.values()) == [
        ("test", "0530/1492626760788443246_0"),
        ("train", "0313-1/6040"),
        ("train", "0531/1492626287507231547"),
        ("train", "0601/1494453497604532231"),
        ("train", "0601/1494453503601902751"),
    ]
    assert "tusimple_test_clips_0530_1492626760788443246_0_20" in samples
    for fid, sample in samples.items():
        grid = GRID_48 if "0313" in fid else GRID_56
        np.testing.assert_array_equal(sample.lane.h_samples, grid)
        xs = sample.lane.xs
        assert xs.shape == (4, len(grid))
        # ids run left to right on every row where all lanes have a point
        shared = np.all(xs != NO_POINT, axis=0)
        assert shared.any(), fid
        assert np.all(np.diff(xs[:, shared], axis=0) > 0), fid
        for lane_id in range(1, 5):
            assert components(sample.lane.mask == lane_id) == 1, (fid, lane_id)
        assert validate(sample) == []


# ---- lane order and point rules ---------------------------------------------------------------


def test_a_lane_ending_high_up_sorts_left_of_the_lane_it_is_left_of():
    """The far-left lane ends at row 400 (x 300); the ego-left lane reaches the bottom at x 40.
    By lowest-point x the ego lane would come first; on row 400 the far-left lane is left of it."""
    rows = np.arange(300, 720, 10, dtype=np.float64)
    ego_left = 600 - (rows - 300) * 560 / 410
    far_left = np.where(rows <= 400, 520 - (rows - 300) * 2.2, NO_POINT)
    xs = np.stack([ego_left, far_left])
    assert ego_left[-1] < far_left[rows == 400][0]  # the naive rule's trap
    assert ego_left[rows == 400][0] > far_left[rows == 400][0]
    assert order_left_to_right(xs, rows, 719).tolist() == [1, 0]


def test_ties_at_the_bottom_are_broken_by_mean_x_then_by_file_order():
    rows = np.array([600.0, 700.0])
    # every lane meets row 700 at x 200; means 200, 200, 190, 210
    xs = np.array([[200.0, 200.0], [NO_POINT, 200.0], [180.0, 200.0], [220.0, 200.0]])
    assert order_left_to_right(xs, rows, 700).tolist() == [2, 0, 1, 3]


def test_lane_order_does_not_depend_on_the_order_in_the_file(tmp_path, real_sample):
    doc = real_line()
    shuffled = {**doc, "lanes": [doc["lanes"][i] for i in (2, 0, 3, 1)]}
    [sample] = convert_all(train_root(tmp_path, [shuffled])).values()
    np.testing.assert_array_equal(sample.lane.xs, real_sample.lane.xs)
    np.testing.assert_array_equal(sample.lane.mask, real_sample.lane.mask)


def test_negative_x_become_no_point_and_x_beyond_the_right_edge_are_kept(tmp_path):
    rows = GRID_56
    left = [-2] * 30 + [-35, -8] + [40 + 20 * i for i in range(24)]  # enters from the left border
    right = [-2] * 40 + [1180, 1230, 1281, 1340] + [-2] * 12  # leaves on the right
    doc = {"lanes": [right, left], "h_samples": rows, "raw_file": RAW_FILE}
    [sample] = convert_all(train_root(tmp_path, [doc])).values()
    xs = sample.lane.xs
    np.testing.assert_array_equal(xs[0], [NO_POINT] * 32 + [40 + 20 * i for i in range(24)])
    np.testing.assert_array_equal(xs[1], right)
    mask = sample.lane.mask
    # the kept points beyond the edge pull the line to the border (OpenCV clips it)
    assert np.any(mask[:, -1] == 2)
    assert not np.any(mask[: rows[32] - 3] == 1)  # nothing drawn towards the dropped points
    assert np.any(mask[rows[32]] == 1)


def test_gaps_inside_a_lane_are_bridged_like_lanenet(tmp_path):
    doc = real_line()
    lane = list(doc["lanes"][1])
    lane[30:36] = [-2] * 6
    gapped = {**doc, "lanes": [lane]}
    [sample] = convert_all(train_root(tmp_path, [gapped])).values()
    ours = sample.lane.mask == 1
    assert components(ours) == 1
    assert np.all(ours[doc["h_samples"][30] : doc["h_samples"][35] + 1].any(axis=1))
    np.testing.assert_array_equal(sample.lane.xs[0], lane)


def test_a_lane_without_points_is_dropped_and_counted(tmp_path):
    doc = real_line()
    empty = {**doc, "lanes": [doc["lanes"][0], [-2] * 56, doc["lanes"][1], [-5] * 56]}
    [sample] = convert_all(train_root(tmp_path, [empty])).values()
    assert sample.lane.xs.shape == (2, 56)
    assert sample.notes == {"lane_without_points": 2}
    assert set(np.unique(sample.lane.mask).tolist()) == {0, 1, 2}


def test_a_line_without_lanes_is_a_sample_with_an_empty_mask(tmp_path):
    [sample] = convert_all(train_root(tmp_path, [{**real_line(), "lanes": []}])).values()
    assert sample.lane.xs.shape == (0, 56)
    assert not sample.lane.mask.any()
    assert sample.tasks == ("lane",)


# ---- layouts ----------------------------------------------------------------------------------


def test_root_may_be_the_train_set_or_the_test_set_folder_itself(tmp_path):
    docs = [real_line()]
    root = train_root(tmp_path, docs)
    assert [(f.split, f.id) for f in TuSimpleConverter(root / "train_set").frames()] == [
        ("train", "clips/0601/1494453497604532231/20")
    ]
    test_dir = tmp_path / "test_set"
    shutil.copytree(root / "train_set" / "clips", test_dir / "clips")
    write_lines(test_dir / "test_label.json", docs)
    [sample] = convert_all(test_dir).values()
    assert (sample.key, sample.split) == ("tusimple_test_clips_0601_1494453497604532231_20", "test")


def test_test_label_json_is_read_from_the_root_or_from_test_set(tmp_path):
    docs = [real_line()]
    root = train_root(tmp_path, docs)
    shutil.copytree(root / "train_set" / "clips", root / "test_set" / "clips")
    write_lines(root / "test_label.json", docs)
    beside = {k: s.lane.xs.tolist() for k, s in convert_all(root).items()}
    (root / "test_label.json").rename(root / "test_set" / "test_label.json")
    inside = convert_all(root)
    assert sorted(s.split for s in inside.values()) == ["test", "train"]
    assert {k: s.lane.xs.tolist() for k, s in inside.items()} == beside
    shutil.copyfile(root / "test_set" / "test_label.json", root / "test_label.json")  # same bytes: fine
    assert len(convert_all(root)) == 2
    write_lines(root / "test_label.json", docs + docs)
    with pytest.raises(LayoutError, match="differ: keep one test_label.json"):
        TuSimpleConverter(root).check_layout()


def test_val_fraction_moves_whole_clips_deterministically(synth_root):
    root = synth_root("tusimple")
    frames = TuSimpleConverter(root, TuSimpleOptions(val_fraction=0.34)).frames()
    again = TuSimpleConverter(root, TuSimpleOptions(val_fraction=0.34)).frames()
    assert [(f.split, f.id) for f in frames] == [(f.split, f.id) for f in again]
    by_split = {s: [f for f in frames if f.split == s] for s in ("train", "val", "test")}
    assert [len(v) for v in by_split.values()] == [4, 2, 2]  # round(0.34 x 6 clips) = 2
    clips = {s: {f.id.rsplit("/", 1)[0] for f in v} for s, v in by_split.items()}
    assert not clips["train"] & clips["val"]
    assert all(f.id.startswith("clips/0530/") for f in by_split["test"])
    assert [f.split for f in TuSimpleConverter(root).frames()].count("val") == 0


# ---- the synthetic writer ---------------------------------------------------------------------


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _label_files(root: Path) -> dict[str, tuple[Path, Path]]:
    """label file name -> (path, folder its raw_file paths are relative to)."""
    return {
        "label_data_0313.json": (root / "train_set/label_data_0313.json", root / "train_set"),
        "label_data_0601.json": (root / "train_set/label_data_0601.json", root / "train_set"),
        "test_label.json": (root / "test_label.json", root / "test_set"),
    }


def test_synth_tusimple_is_registered_under_tusimple():
    assert SYNTHESIZERS["tusimple"] is synth_tusimple
    assert CONVERTERS["tusimple"] is TuSimpleConverter


def test_synth_writes_the_native_layout_with_twenty_frames_per_clip(synth_root):
    root = synth_root("tusimple")
    files = set(_files(root))
    clips = sorted({f.rsplit("/", 1)[0] for f in files if f.endswith(".jpg")})
    assert len(clips) == 8
    assert sum(c.startswith("train_set/clips/0313-1/") for c in clips) == 3
    assert sum(c.startswith("train_set/clips/0601/") for c in clips) == 3
    assert sum(c.startswith("test_set/clips/0530/") and c.endswith("_0") for c in clips) == 2
    for clip in clips:
        name = clip.rsplit("/", 1)[1]
        assert name.isdigit() or (name.endswith("_0") and name[:-2].isdigit())
        if "/0601/" in clip or "/0530/" in clip:
            assert len(name.removesuffix("_0")) == 19  # ns timestamps
    expected = {f"{c}/{i}.jpg" for c in clips for i in range(1, 21)}
    expected |= {"train_set/label_data_0313.json", "train_set/label_data_0601.json", "test_label.json"}
    assert files == expected
    some_clip = root / clips[0]
    assert cv2.imread(str(some_clip / "20.jpg")).shape == (720, 1280, 3)
    assert cv2.imread(str(some_clip / "1.jpg")).shape == (90, 160, 3)


def test_synth_label_lines_have_both_grids_gaps_and_points_outside_the_image(synth_root):
    root = synth_root("tusimple")
    all_x, gaps = [], 0
    for name, (path, base) in _label_files(root).items():
        text = path.read_text()
        assert text.endswith("\n") and "\n\n" not in text
        docs = label_lines(path)
        assert docs
        first_key = json.loads(text.splitlines()[0], object_pairs_hook=lambda kv: kv)[0][0]
        if name == "label_data_0313.json":
            assert first_key == "raw_file"
            assert all(d["h_samples"] == GRID_48 and len(d["classes"]) == len(d["lanes"]) for d in docs)
        else:
            assert first_key == "lanes" and all(d["h_samples"] == GRID_56 for d in docs)
        for doc in docs:
            assert (base / doc["raw_file"]).is_file()
            assert 2 <= len(doc["lanes"]) <= 5
            for lane in doc["lanes"]:
                assert len(lane) == len(doc["h_samples"]) and all(isinstance(x, int) for x in lane)
                points = [i for i, x in enumerate(lane) if x != -2]
                gaps += any(lane[i] == -2 for i in range(points[0], points[-1]))
                all_x += lane
    assert gaps >= 2
    assert min(all_x) < -2  # negative x (left of the image) besides -2
    assert max(all_x) >= 1280  # beyond the right edge


def test_synth_markings_lie_under_the_polylines_and_gaps_under_a_vehicle(synth_root):
    root = synth_root("tusimple")
    solid_seen = gap_rows = 0
    for name, (path, base) in _label_files(root).items():
        for doc in label_lines(path):
            gray = cv2.imread(str(base / doc["raw_file"]), cv2.IMREAD_GRAYSCALE)
            bright = cv2.dilate(gray, np.ones((3, 3), np.uint8)) >= 185  # paint within 1 px
            rows = doc["h_samples"]
            for k, lane in enumerate(doc["lanes"]):
                inside = [(x, y) for x, y in zip(lane, rows) if 0 <= x < 1280]
                on = np.mean([bright[y, x] for x, y in inside])
                beside = np.mean([bright[y, min(x + 40, 1279)] for x, y in inside])
                assert on >= 0.15 and beside <= 0.2, (doc["raw_file"], k, on, beside)
                if name == "label_data_0313.json" and doc["classes"][k] == 1:  # solid
                    assert on == 1.0
                    solid_seen += 1
                points = [i for i, x in enumerate(lane) if x != -2]
                for i in range(points[0], points[-1]):
                    if lane[i] == -2:  # a gap: the vehicle hides the marking there
                        a = max(j for j in points if j < i)
                        b = min(j for j in points if j > i)
                        x = lane[a] + (lane[b] - lane[a]) * (i - a) / (b - a)
                        assert gray[rows[i], int(round(x))] < 80
                        gap_rows += 1
    assert solid_seen >= 3 and gap_rows >= 6


def test_synth_same_seed_gives_byte_identical_files_and_another_seed_differs(tmp_path, synth_root):
    synth_tusimple(tmp_path / "a", seed=0)
    synth_tusimple(tmp_path / "b", seed=1)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a == _files(synth_root("tusimple"))  # the session's copy, also seed 0
    assert a["test_label.json"] != b["test_label.json"]
    assert not [p for p in (tmp_path / "a").rglob("*") if p.name.endswith(".part")]


def test_synth_frames_convert_with_lanes_left_to_right(synth_root):
    samples = convert_all(synth_root("tusimple"))
    assert sorted(s.split for s in samples.values()) == ["test"] * 2 + ["train"] * 6
    grids = set()
    for sample in samples.values():
        assert validate(sample) == []
        assert sample.sequence == sample.id.removeprefix("clips/").rsplit("/", 1)[0]
        grids.add(len(sample.lane.h_samples))
        xs = sample.lane.xs
        shared = np.all(xs != NO_POINT, axis=0)
        if shared.any():
            assert np.all(np.diff(xs[:, shared], axis=0) > 0), sample.key
    assert grids == {48, 56}


# ---- the command line -------------------------------------------------------------------------


def test_cli_synth_then_ingest_with_val_and_thickness_gives_valid_shards(cli, tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "shards"
    result = cli("synth", "tusimple", "--to", raw)
    assert result.code == 0, result.err
    result = cli(
        "ingest",
        "tusimple",
        raw,
        "--to",
        out,
        "--workers",
        1,
        "--val-fraction",
        0.34,
        "--lane-thickness",
        3,
        "--image-format",
        "png",
    )
    assert result.code == 0, result.err
    rows = read_manifest(out, "tusimple")
    assert sorted(r["split"] for r in rows) == ["test"] * 2 + ["train"] * 4 + ["val"] * 2
    assert all(r["has_lane"] and r["key"].startswith(f"tusimple_{r['split']}_clips_") for r in rows)
    expected = convert_all(raw, val_fraction=0.34, lane_thickness=3.0)
    ss = ShardSet.open(out)
    for row in rows:
        got, want = ss.read_sample(row["key"]), expected[row["key"]]
        assert row["lane_count"] == want.lane.xs.shape[0]
        assert got.lane.thickness == 3.0
        np.testing.assert_array_equal(got.lane.mask, want.lane.mask)
        np.testing.assert_array_equal(got.lane.xs, want.lane.xs)
        assert got.sequence == want.sequence
    check = cli("validate", out)
    assert check.code == 0, check.out + check.err


def test_cli_max_side_stores_scaled_polylines_and_a_redrawn_mask(cli, tmp_path, real_sample):
    out = tmp_path / "shards"
    result = cli(
        "ingest", "tusimple", fixture_path("tusimple", "train_set"), "--to", out, "--workers", 1, "--max-side", 640
    )
    assert result.code == 0, result.err
    members = ShardSet.open(out).read_members(KEY)
    doc = json.loads(members["lane.json"])
    xs = np.asarray(real_line()["lanes"], dtype=np.float64)
    np.testing.assert_array_equal(doc["lanes"], np.where(xs == -2, -2.0, (xs + 0.5) * 0.5 - 0.5))
    assert doc["thickness"] == 2.5
    mask = cv2.imdecode(np.frombuffer(members["lane.png"], np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(mask, resize_sample(real_sample, 640).lane.mask)
    assert json.loads(members["meta.json"])["orig_size"] == [720, 1280]
