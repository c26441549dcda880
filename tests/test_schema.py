"""Schema: keys, taxonomies, validation, and the codec round trip of every task."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import assert_fails_before_writing, ingest_cli

from mtl_data.errors import MtlDataError
from mtl_data.schema.geometry import MAX_DEPTH_M
from mtl_data.schema.sample import SCHEMA_VERSION, TASKS, Det2D, Det3D, Lanes, Sample, Sign, Steer, make_key
from mtl_data.schema.taxonomy import DET_CLASSES, DET_TABLES, IGNORE, det_class_map
from mtl_data.schema.validate import validate, validate_meta
from mtl_data.shards.codec import DecodeError, decode_sample, encode_sample
from mtl_data.shards.depthpoints import decode_depth_points, encode_depth_points

KITTI_NATIVE = ("Car", "Van", "Truck", "Pedestrian", "Person_sitting", "Cyclist", "Tram", "Misc", "DontCare")


def full_sample(**changes) -> Sample:
    """A sample with every task labelled (for codec and validation tests)."""
    rng = np.random.default_rng(0)
    h, w = 24, 32
    lane_mask = np.zeros((h, w), np.uint8)
    lane_mask[:, 5], lane_mask[:, 20], lane_mask[0, :] = 1, 2, 255
    fields = dict(
        key="src_train_a-b_1",
        source="src",
        split="train",
        id="a-b.1",
        image=rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
        orig_size=(48, 64),
        sequence="drive_3",
        K=np.array([[100.5, 0, 16], [0, 100.25, 12], [0, 0, 1]]),
        timestamp_us=1533904617000001,
        seg=rng.integers(0, 19, (h, w), dtype=np.uint8),
        depth=(rng.integers(0, 5000, (h, w)) * (rng.random((h, w)) < 0.1) / 256).astype(np.float32),
        det2d=Det2D(
            boxes=np.array([[1.5, 2.25, 10.0, 20.0]]),
            classes=np.array([3]),
            ignore=np.array([[0.0, 0.0, 4.0, 4.0]]),
            truncated=np.array([0.25]),
            occluded=np.array([2]),
            native_class=("Bus",),
        ),
        det3d=Det3D(
            boxes=np.array([[1.0, 1.5, 20.0, 10.0, 2.5, 3.0, 0.3]]),
            classes=np.array([3]),
            rotation=np.eye(3)[None],
            native_class=("Bus",),
        ),
        steer=Steer(angle_deg=-12.5, speed_kmh=43.2, gap_ms=4.0),
        sign=Sign(class_id=14, roi=(5.0, 6.0, 24.0, 25.0)),
        lane=Lanes(mask=lane_mask, h_samples=np.array([10.0, 20.0]), xs=np.array([[5.0, -2.0], [20.0, 21.0]])),
        extra={"camera": "front_center"},
    )
    fields.update(changes)
    return Sample(**fields)


def test_every_kitti_native_class_is_mapped():
    assert set(DET_TABLES["kitti"]) == set(KITTI_NATIVE)
    for native, unified in DET_TABLES["kitti"].items():
        assert unified == IGNORE or unified in DET_CLASSES, native


def test_documented_kitti_choices():
    table = DET_TABLES["kitti"]
    assert table["DontCare"] == IGNORE
    assert table["Person_sitting"] == "pedestrian"
    assert table["Misc"] == "other_vehicle"


def test_taxonomy_file_with_an_unknown_target_class_is_a_clear_error(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"det": {"kitti": {"Misc": "spaceship"}}}))
    with pytest.raises(MtlDataError, match=r"t.json: det.kitti.Misc: unknown class 'spaceship'"):
        det_class_map("kitti", str(path))


BAD_TAXONOMY_FILES = {
    "unknown_task": ({"dett": {"kitti": {"Misc": "van"}}}, r"t.json: unknown task 'dett' \(allowed: det, seg\)"),
    "unknown_source": (
        {"det": {"kiti": {"Misc": "van"}}},
        r"t.json: det: unknown source 'kiti' \(allowed: kitti, a2d2, cityscapes\)",
    ),
    "source_without_a_table_for_the_task": (
        {"seg": {"kitti": {"Car": "car"}}},
        r"t.json: seg: unknown source 'kitti' \(allowed: a2d2, cityscapes\)",
    ),
    # a2d2's table, read while resolving kitti's: the whole file is checked, not the part in use
    "unknown_native_class_of_another_source": (
        {"det": {"kitti": {"Misc": "van"}, "a2d2": {"Spaceship": "car"}}},
        r"t.json: det.a2d2: unknown native class 'Spaceship' \(known: Car, VanSUV, ",
    ),
    "unknown_unified_class_of_another_task": (
        {"seg": {"a2d2": {"Sky": "skyy"}}},
        r"t.json: seg.a2d2.Sky: unknown class 'skyy' \(allowed: bicycle, building, ",
    ),
    "unified_class_not_a_string": (
        {"det": {"kitti": {"Misc": ["van"]}}},
        r"t.json: det.kitti.Misc: unknown class \['van'\] \(allowed: ",
    ),
    "entries_of_another_source_not_an_object": ({"det": {"a2d2": ["Car"]}}, r't.json: "det.a2d2" must be an object'),
}


@pytest.mark.parametrize("doc, message", BAD_TAXONOMY_FILES.values(), ids=BAD_TAXONOMY_FILES.keys())
def test_taxonomy_file_with_an_unknown_key_is_an_error_naming_it_and_the_allowed_values(tmp_path, doc, message):
    path = tmp_path / "t.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(MtlDataError, match=message):
        det_class_map("kitti", str(path))


@pytest.mark.parametrize("source", ["gtsrb", "a2d2"])  # gtsrb has no class table: checked all the same
def test_ingest_refuses_a_taxonomy_file_with_an_unknown_key_before_reading_a_frame(source, cli, synth_root, tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"det": {"kitti": {"Pedestrain": "pedestrian"}}}))
    out = tmp_path / "shards"
    result = ingest_cli(cli, source, synth_root(source), out, "--taxonomy", path)
    assert_fails_before_writing(
        result, out, source, f"{path}: det.kitti: unknown native class 'Pedestrain'", "Pedestrian"
    )


def test_taxonomy_file_with_known_keys_maps_those_classes(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"det": {"kitti": {"Misc": "van"}, "a2d2": {"Animal": "ignore"}}, "seg": {}}))
    kitti, a2d2 = det_class_map("kitti", str(path)), det_class_map("a2d2", str(path))
    assert kitti.lookup("Misc") == DET_CLASSES.index("van") and a2d2.lookup("Animal") is None
    assert kitti.lookup("Car") == DET_CLASSES.index("car")


def test_keys_are_sanitized_so_webdataset_cannot_merge_samples():
    assert (
        make_key("a2d2", "train", "20180807145028_camera_frontcenter_000006882")
        == "a2d2_train_20180807145028_camera_frontcenter_000006882"
    )
    assert make_key("tusimple", "train", "clips/0601/149.20.jpg") == "tusimple_train_clips_0601_149_20_jpg"
    assert "." not in make_key("x", "val", "a.b.c")


def test_full_sample_is_valid_and_has_every_task():
    sample = full_sample()
    assert validate(sample, len(DET_CLASSES)) == []
    assert sample.tasks == TASKS


@pytest.mark.parametrize(
    "change, problem",
    [
        (dict(key="bad.key"), "characters outside"),
        (dict(split="training"), "split 'training'"),
        (dict(depth=np.full((24, 32), 1.001, np.float32)), "not quantized"),
        (dict(depth=np.zeros((10, 10), np.float32)), "depth is (10, 10)"),
        (dict(det2d=Det2D(boxes=np.array([[5.0, 0, 1.0, 4]]), classes=np.array([0]))), "x2 < x1"),
        (dict(det2d=Det2D(boxes=np.array([[100.0, 0, 110, 4]]), classes=np.array([0]))), "entirely outside"),
        (dict(det2d=Det2D(boxes=np.zeros((1, 4)), classes=np.array([99]))), "class ids [99]"),
        (dict(det3d=Det3D(boxes=np.array([[0, 0, 5, 0, 1, 1, 0.0]]), classes=np.array([0]))), "non-positive size"),
        (dict(seg=np.zeros((24, 32), np.int32)), "seg must be uint8"),
    ],
)
def test_validate_names_each_problem(change, problem):
    problems = validate(full_sample(**change), len(DET_CLASSES))
    assert any(problem in p for p in problems), problems


def test_codec_round_trip_is_lossless_for_every_label_and_png_image():
    sample = full_sample()
    members = encode_sample(sample, "png")
    assert [ext for ext, _ in members] == [
        "png",
        "meta.json",
        "seg.png",
        "depth.pts",
        "det2d.json",
        "det3d.json",
        "steer.json",
        "sign.cls",
        "lane.png",
        "lane.json",
    ]
    back = decode_sample(sample.key, dict(members))
    for name in ("image", "seg", "depth", "K"):
        np.testing.assert_array_equal(getattr(back, name), getattr(sample, name))
    assert back.depth.dtype == np.float32
    for name in ("boxes", "classes", "ignore", "truncated", "occluded"):
        np.testing.assert_array_equal(getattr(back.det2d, name), getattr(sample.det2d, name))
    np.testing.assert_array_equal(back.det3d.boxes, sample.det3d.boxes)
    np.testing.assert_array_equal(back.det3d.rotation, sample.det3d.rotation)
    assert back.steer == sample.steer and back.sign == sample.sign
    np.testing.assert_array_equal(back.lane.mask, sample.lane.mask)
    np.testing.assert_array_equal(back.lane.xs, sample.lane.xs)
    assert (back.source, back.split, back.id, back.sequence, back.timestamp_us, back.orig_size, back.extra) == (
        sample.source,
        sample.split,
        sample.id,
        sample.sequence,
        sample.timestamp_us,
        sample.orig_size,
        sample.extra,
    )


def test_decoding_only_some_tasks_leaves_the_other_labels_unread():
    sample = full_sample()
    members = dict(encode_sample(sample, "png"))
    back = decode_sample(sample.key, members, tasks=["det2d", "lane"])
    assert back.tasks == ("det2d", "lane")
    np.testing.assert_array_equal(back.det2d.boxes, sample.det2d.boxes)
    # an unrequested label is not even read: a corrupt depth member does not matter
    members["depth.pts"] = b"not depth points"
    assert decode_sample(sample.key, members, tasks=["seg"]).tasks == ("seg",)
    with pytest.raises(ValueError, match="depth.pts"):
        decode_sample(sample.key, members)


def test_an_image_decoded_elsewhere_is_used_instead_of_the_member():
    sample = full_sample()
    members = {ext: data for ext, data in encode_sample(sample, "png") if ext != "png"}
    stand_in = np.full(sample.image.shape, 7, np.uint8)
    back = decode_sample(sample.key, members, image=stand_in)
    assert back.image is stand_in
    np.testing.assert_array_equal(back.seg, sample.seg)
    with pytest.raises(ValueError, match="no jpg or png image member"):
        decode_sample(sample.key, members)


def test_meta_json_carries_the_documented_keys():
    members = dict(encode_sample(full_sample(), "jpg"))
    meta = json.loads(members["meta.json"])
    assert list(meta)[:10] == [
        "schema",
        "source",
        "split",
        "id",
        "sequence",
        "size",
        "orig_size",
        "K",
        "timestamp_us",
        "tasks",
    ]
    assert meta["size"] == [24, 32] and meta["orig_size"] == [48, 64] and meta["sign_roi"] == [5, 6, 24, 25]
    assert members["sign.cls"] == b"14"


def test_depth_member_is_uint16_metres_times_256():
    sample = full_sample()
    points = decode_depth_points(dict(encode_sample(sample))["depth.pts"])
    assert points.size == sample.size and points.value.dtype == np.uint16
    np.testing.assert_array_equal(points.to_map(), np.rint(sample.depth * 256).astype(np.uint16))


def test_new_samples_carry_schema_2_and_every_readable_version_validates():
    meta = json.loads(dict(encode_sample(full_sample()))["meta.json"])
    assert meta["schema"] == SCHEMA_VERSION == 2
    for version in (1, 2):
        assert validate_meta(meta | {"schema": version}) == []
    for version in (0, 3, None, True, "2"):
        assert validate_meta(meta | {"schema": version}) == [
            f"meta.json schema {version!r}, this tool reads schema versions 1 and 2"
        ]


@pytest.mark.parametrize("value", [256.0, 300.0, -1.0, np.nan, np.inf])
def test_encoding_a_depth_the_uint16_cannot_hold_is_an_error_not_a_wrap(value):
    depth = full_sample().depth.copy()
    depth[3, 4] = value
    with pytest.raises(ValueError, match=r"1 value\(s\) outside \[0, 255.996\] m .*quantize_depth"):
        encode_sample(full_sample(depth=depth))


def test_the_largest_storable_depth_encodes():
    depth = full_sample().depth.copy()
    depth[3, 4] = MAX_DEPTH_M
    back = decode_sample("k", dict(encode_sample(full_sample(depth=depth))))
    assert back.depth[3, 4] == MAX_DEPTH_M


def test_a_sample_with_both_depth_members_does_not_decode():
    sample = full_sample()
    members = dict(encode_sample(sample))
    members["depth.png"] = members["depth.pts"]
    with pytest.raises(DecodeError, match="both depth.png and depth.pts"):
        decode_sample(sample.key, members)


def test_depth_points_of_another_size_than_meta_json_do_not_decode():
    sample = full_sample()
    members = dict(encode_sample(sample))
    members["depth.pts"] = encode_depth_points(np.ones((24, 31), np.uint16))
    with pytest.raises(DecodeError, match=r"depth.pts: a 24x31 map, but meta.json size is \[24, 32\]"):
        decode_sample(sample.key, members)


def test_jpeg_image_is_close_and_keeps_rgb_channel_order():
    yy, xx = np.mgrid[0:24, 0:32]
    img = np.stack([200 + 0 * xx, 2 * xx, 100 + yy], axis=-1).astype(np.uint8)  # distinct R, G, B
    back = decode_sample("k", dict(encode_sample(full_sample(image=img), "jpg")))
    assert back.image.shape == img.shape
    assert np.abs(back.image.astype(int) - img).mean() < 3
    np.testing.assert_allclose(back.image.mean(axis=(0, 1)), img.mean(axis=(0, 1)), atol=2)


def test_absent_task_has_no_member_and_is_not_listed():
    sample = full_sample(seg=None, steer=None, sign=None, lane=None)
    members = dict(encode_sample(sample))
    assert "seg.png" not in members and "steer.json" not in members
    assert json.loads(members["meta.json"])["tasks"] == ["depth", "det2d", "det3d"]


def test_empty_detection_label_is_kept_as_zero_boxes():
    sample = full_sample(det2d=Det2D(boxes=np.zeros((0, 4)), classes=np.zeros(0, np.int64)))
    back = decode_sample(sample.key, dict(encode_sample(sample)))
    assert back.det2d is not None and back.det2d.boxes.shape == (0, 4)
    assert "det2d" in back.tasks


def test_cityscapes_train_ids_are_the_unified_seg_ids():
    """Cityscapes' official trainId of every label id equals its unified seg id (255 = ignore)."""
    from mtl_data.schema.taxonomy import CITYSCAPES_LABEL_IDS, SEG_CLASSES, class_map

    official = {
        7: 0,
        8: 1,
        11: 2,
        12: 3,
        13: 4,
        17: 5,
        19: 6,
        20: 7,
        21: 8,
        22: 9,
        23: 10,
        24: 11,
        25: 12,
        26: 13,
        27: 14,
        28: 15,
        31: 16,
        32: 17,
        33: 18,
    }  # raw-formats 5.3
    cmap = class_map("seg", "cityscapes")
    assert sorted(CITYSCAPES_LABEL_IDS) == list(range(34))
    for label_id, name in CITYSCAPES_LABEL_IDS.items():
        got = cmap.lookup(name)
        assert (255 if got is None else got) == official.get(label_id, 255), name
    assert len(SEG_CLASSES) == 19


def test_sign_table_has_the_43_gtsrb_classes():
    import csv

    from conftest import fixture_path

    from mtl_data.schema.taxonomy import SIGN_CLASSES

    with fixture_path("gtsrb", "signnames.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["SignName"] for r in rows] == list(SIGN_CLASSES)
