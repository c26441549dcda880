"""Cityscapes: pure geometry against hand-computed values, the converter on the real fixtures
(``fixtures/cityscapes``: a real frame downscaled to 256x128, the official gtBbox3d sample and the
quoted camera json) and on the synthetic dataset, whose files are checked for consistency."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import BOX_SAMPLE, CAMERA_SAMPLE, box_sample_root, fixture_path, ingest_cli, read_manifest, read_rejects

from mtl_data.ingest.cityscapes import CityscapesConverter, CityscapesOptions
from mtl_data.ingest.resize import resize_sample
from mtl_data.schema import cityscapes_geometry as cg
from mtl_data.schema import geometry as geo
from mtl_data.schema.sample import IGNORE_INDEX
from mtl_data.schema.taxonomy import DET_CLASSES, SEG_CLASSES
from mtl_data.schema.validate import validate
from mtl_data.shards.reader import ShardSet
from mtl_data.synth.cityscapes import synth_cityscapes
from mtl_data.synth.registry import SYNTHESIZERS

#: cityscapesScripts helpers/labels.py: label id -> train id (raw-formats 5.3), written out independently
OFFICIAL_TRAIN_ID = {
    0: 255,
    1: 255,
    2: 255,
    3: 255,
    4: 255,
    5: 255,
    6: 255,
    7: 0,
    8: 1,
    9: 255,
    10: 255,
    11: 2,
    12: 3,
    13: 4,
    14: 255,
    15: 255,
    16: 255,
    17: 5,
    18: 255,
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
    29: 255,
    30: 255,
    31: 16,
    32: 17,
    33: 18,
}
REAL_FRAME = ("cityscapes", "mmseg_pseudo")
REAL_GT = "gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_{}.png"
SYNTH_IDS = {
    "train": ["aachen_000000_000019", "aachen_000001_000019", "bochum_000000_000313"],
    "val": ["frankfurt_000000_000294", "frankfurt_000001_000019"],
}


@pytest.fixture(scope="module")
def synth(synth_root) -> Path:
    """The session's synthetic Cityscapes dataset (seed 0), read-only."""
    return synth_root("cityscapes")


@pytest.fixture(scope="module")
def synth_samples(synth) -> dict:
    conv = CityscapesConverter(synth)
    return {f.id: (f, conv.convert(f)) for f in conv.frames()}


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def hamilton(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return np.array(
        [
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
            w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
        ]
    )


def rotate(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``q v q*`` with quaternion products (independent of the matrix form under test)."""
    q = np.asarray(q, np.float64) / np.linalg.norm(q)
    conj = q * [1, -1, -1, -1]
    return np.array([hamilton(hamilton(q, np.r_[0.0, p]), conj)[1:] for p in np.atleast_2d(v)])


def official_projection(obj: dict, sensor: dict) -> np.ndarray:
    """(8, 2) pixels of a gtBbox3d box's corners by the recipe of Box3DImageTransform.ipynb."""
    L, W, H = obj["3d"]["dimensions"]
    local = np.array([[sx * L / 2, sy * W / 2, sz * H / 2] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
    corners_v = np.array(obj["3d"]["center"]) + rotate(obj["3d"]["rotation"], local)
    T = np.array(sensor["sensor_T_ISO_8855"])
    c = corners_v @ T[:, :3].T + T[:, 3]
    X, Y, Z = -c[:, 1], -c[:, 2], c[:, 0]
    return np.column_stack([sensor["fx"] * X / Z + sensor["u0"], sensor["fy"] * Y / Z + sensor["v0"]])


# ---- pure geometry, hand-computed ------------------------------------------------------------------


def test_quaternion_to_matrix_hand_values():
    np.testing.assert_allclose(cg.quaternion_to_matrix([1, 0, 0, 0])[0], np.eye(3))
    np.testing.assert_allclose(cg.quaternion_to_matrix([2, 0, 0, 0])[0], np.eye(3))  # normalised first
    s = np.sqrt(0.5)  # 90 degrees about z: x -> y, y -> -x
    np.testing.assert_allclose(cg.quaternion_to_matrix([s, 0, 0, s])[0], [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-15)
    np.testing.assert_allclose(cg.quaternion_to_matrix([0, 1, 0, 0])[0], np.diag([1, -1, -1]), atol=1e-15)
    q = np.array([0.9735839424380041, -0.010751769161021867, 0.0027191710555974913, 0.22805988817753894])
    np.testing.assert_allclose(cg.quaternion_to_matrix(q)[0], rotate(q, np.eye(3)).T, atol=1e-15)


def test_camera_to_optical_is_minus_y_minus_z_x():
    np.testing.assert_array_equal(cg.camera_to_optical([[1.0, 2.0, 3.0]]), [[-2.0, -3.0, 1.0]])


def test_vehicle_to_camera_applies_rotation_then_translation():
    T = np.array([[0.0, -1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 2.0], [0.0, 0.0, 1.0, 3.0]])  # 90 deg about z
    np.testing.assert_allclose(cg.vehicle_to_camera([[10.0, 1.0, 0.5]], T), [[0.0, 12.0, 3.5]])


def test_upright_vehicle_box_facing_forward_has_yaw_minus_half_pi():
    """Straight ahead, 10 m, 2 m left: optical centre (-2, -0.5, 10); length along optical z."""
    T = np.column_stack([np.eye(3), np.zeros(3)])
    boxes, rot = cg.vehicle_boxes_to_optical([[10.0, 2.0, 0.5]], [[4.0, 2.0, 1.5]], [[1, 0, 0, 0]], T)
    np.testing.assert_allclose(boxes[0], [-2.0, -0.5, 10.0, 4.0, 2.0, 1.5, -np.pi / 2], atol=1e-12)
    assert geo.is_upright(rot)
    s = np.sqrt(0.5)  # turned 90 degrees to the left: its front points to optical -x, yaw = pi
    boxes, rot = cg.vehicle_boxes_to_optical([[10.0, 2.0, 0.5]], [[4.0, 2.0, 1.5]], [[s, 0, 0, s]], T)
    assert abs(boxes[0, 6]) == pytest.approx(np.pi)
    np.testing.assert_allclose(geo.box3d_corners(boxes, rot)[0].mean(0), [-2.0, -0.5, 10.0], atol=1e-12)


def test_a_pitched_camera_keeps_the_full_rotation():
    T = np.column_stack([cg.extrinsic_to_sensor_T(0, 0, 0, 0.0, 0.04, 0.0)[:, :3], np.zeros(3)])
    _, rot = cg.vehicle_boxes_to_optical([[10.0, 0.0, 0.5]], [[4.0, 2.0, 1.5]], [[1, 0, 0, 0]], T)
    assert not geo.is_upright(rot)


def test_extrinsic_without_rotation_is_minus_the_camera_position():
    T = cg.extrinsic_to_sensor_T(1.7, 0.1, 1.22, 0.0, 0.0, 0.0)
    np.testing.assert_allclose(T, [[1, 0, 0, -1.7], [0, 1, 0, -0.1], [0, 0, 1, -1.22]], atol=1e-15)


def test_real_camera_json_extrinsic_reproduces_the_real_sensor_transform():
    """The quoted camera json and the official gtBbox3d sample describe the same camera."""
    e = read_json(fixture_path(*CAMERA_SAMPLE))["extrinsic"]
    sensor = read_json(fixture_path(*BOX_SAMPLE))["sensor"]
    T = cg.extrinsic_to_sensor_T(e["x"], e["y"], e["z"], e["yaw"], e["pitch"], e["roll"])
    np.testing.assert_allclose(T, sensor["sensor_T_ISO_8855"], atol=1e-12)
    assert e["baseline"] == sensor["baseline"]


def test_disparity_png_values_to_disparity_and_depth():
    p = np.array([0, 1, 2, 257, 1 + 256 * 4, 1 + 256 * 16], np.uint16)
    d = cg.disparity_from_png(p)
    np.testing.assert_array_equal(d, [0.0, 0.0, 1 / 256, 1.0, 4.0, 16.0])
    np.testing.assert_array_equal(cg.disparity_to_depth(d, 0.5, 1024.0), [0.0, 0.0, 131072.0, 512.0, 128.0, 32.0])


# ---- real fixtures ---------------------------------------------------------------------------------


@pytest.mark.parametrize("with_camera", [False, True], ids=["K_from_sensor_block", "K_from_camera_json"])
def test_real_3d_box_projects_onto_its_amodal_box(with_camera, tmp_path, big_image):
    conv = CityscapesConverter(box_sample_root(tmp_path / "raw", big_image, with_camera))
    [frame] = conv.frames()
    sample = conv.convert(frame)
    doc = read_json(fixture_path(*BOX_SAMPLE))
    s = doc["sensor"]
    np.testing.assert_allclose(sample.K, [[s["fx"], 0, s["u0"]], [0, s["fy"], s["v0"]], [0, 0, 1]])
    assert sample.tasks == ("det2d", "det3d") and validate(sample, len(DET_CLASSES)) == []
    # xywh -> [x, y, x + w, y + h]
    np.testing.assert_array_equal(sample.det2d.amodal, [[602, 415, 816, 533]])
    np.testing.assert_array_equal(sample.det2d.boxes, [[609, 420, 807, 531]])
    assert sample.det2d.ignore.shape == (0, 4)  # the sample has no "ignore" list
    assert [DET_CLASSES[c] for c in sample.det2d.classes] == ["car"] and sample.det2d.native_class == ("car",)
    # converted box -> corners -> K: within 2 px of the amodal box (x2 = x + w fits, x + w - 1 would not)
    corners = geo.box3d_corners(sample.det3d.boxes, sample.det3d.rotation)
    extent = geo.box_extent_in_image(corners, sample.K)[0]
    assert np.abs(extent - sample.det2d.amodal[0]).max() < 2.0
    np.testing.assert_allclose(extent, [602.53, 415.63, 816.17, 533.99], atol=0.01)
    # the same pixels as the official recipe, corner for corner
    uv, _ = geo.project(corners[0], sample.K)
    official = official_projection(doc["objects"][0], s)
    np.testing.assert_allclose(np.sort(uv, axis=0), np.sort(official, axis=0), atol=1e-9)
    # full rotation kept (camera pitch tilts the box); yaw is the heading about optical y
    rot = sample.det3d.rotation[0]
    assert not geo.is_upright(rot[None])
    assert sample.det3d.boxes[0, 6] == pytest.approx(np.arctan2(rot[0, 2], rot[0, 0]))
    np.testing.assert_allclose(sample.det3d.boxes[0, 3:6], [4.3, 1.72, 1.53])


def test_real_labelids_map_to_train_ids_by_the_official_table():
    conv = CityscapesConverter(fixture_path(*REAL_FRAME))
    [frame] = conv.frames()
    assert (frame.split, frame.id) == ("val", "frankfurt_000000_000294")
    sample = conv.convert(frame)
    assert sample.tasks == ("seg",) and sample.sequence == "frankfurt_000000" and sample.K is None
    label_ids = cv2.imread(str(fixture_path(*REAL_FRAME, REAL_GT.format("labelIds"))), cv2.IMREAD_UNCHANGED)
    expected = np.vectorize(OFFICIAL_TRAIN_ID.get, otypes=[np.uint8])(label_ids)
    np.testing.assert_array_equal(sample.seg, expected)
    assert sample.size == (128, 256) and sample.seg.dtype == np.uint8


def test_real_seg_disagrees_with_the_independently_resized_train_ids_only_at_class_borders():
    """PROVENANCE: labelIds and labelTrainIds were downscaled separately; 77 pixels differ."""
    conv = CityscapesConverter(fixture_path(*REAL_FRAME))
    seg = conv.convert(conv.frames()[0]).seg
    train_ids = cv2.imread(str(fixture_path(*REAL_FRAME, REAL_GT.format("labelTrainIds"))), cv2.IMREAD_UNCHANGED)
    rows, cols = np.nonzero(seg != train_ids)
    assert len(rows) == 77 and len(rows) / seg.size < 0.005
    for r, c in zip(rows, cols):  # the other file's class is right next to it: a shifted border
        window = seg[max(r - 2, 0) : r + 3, max(c - 2, 0) : c + 3]
        assert train_ids[r, c] in window, (r, c)


def test_every_label_id_maps_as_the_official_table_says(tmp_path):
    root = tmp_path / "raw"
    ids = np.arange(34, dtype=np.uint8).reshape(2, 17)
    for rel, array in (
        ("leftImg8bit/train/ulm/ulm_000000_000019_leftImg8bit.png", np.zeros((2, 17, 3), np.uint8)),
        ("gtFine/train/ulm/ulm_000000_000019_gtFine_labelIds.png", ids),
    ):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(root / rel), array)
    for taxonomy in ("unified", "native"):
        conv = CityscapesConverter(root, taxonomy=taxonomy)
        seg = conv.convert(conv.frames()[0]).seg
        assert {int(i): int(t) for i, t in zip(ids.ravel(), seg.ravel())} == OFFICIAL_TRAIN_ID
    assert conv.class_tables()["seg"] == list(SEG_CLASSES)


# ---- stereo depth ----------------------------------------------------------------------------------


def depth_root(root: Path, disparity: np.ndarray, baseline: float, fx: float) -> Path:
    h, w = disparity.shape
    base = "ulm_000003_000019"
    (root / "leftImg8bit/val/ulm").mkdir(parents=True)
    assert cv2.imwrite(str(root / f"leftImg8bit/val/ulm/{base}_leftImg8bit.png"), np.zeros((h, w, 3), np.uint8))
    (root / "disparity/val/ulm").mkdir(parents=True)
    assert cv2.imwrite(str(root / f"disparity/val/ulm/{base}_disparity.png"), disparity)
    (root / "camera/val/ulm").mkdir(parents=True)
    (root / f"camera/val/ulm/{base}_camera.json").write_text(
        json.dumps(
            {
                "extrinsic": {
                    "baseline": baseline,
                    "pitch": 0.0,
                    "roll": 0.0,
                    "x": 1.7,
                    "y": 0.1,
                    "yaw": 0.0,
                    "z": 1.22,
                },
                "intrinsic": {"fx": fx, "fy": fx, "u0": w / 2, "v0": h / 2},
            }
        )
    )
    return root


def test_stereo_depth_of_known_disparities_is_exact(tmp_path):
    """baseline * fx = 512: d = 4 px -> 128 m, d = 16 -> 32 m, d = 3 -> 170.667 -> 43691/256 m."""
    p = np.array([[1 + 256 * 4, 1 + 256 * 16, 1 + 256 * 3, 0, 1, 2]], np.uint16)
    conv = CityscapesConverter(depth_root(tmp_path / "raw", p, baseline=0.5, fx=1024.0))
    sample = conv.convert(conv.frames()[0])
    assert sample.tasks == ("depth",)
    # p = 0 (no match) and p = 1 (d = 0, infinitely far) are no measurement; p = 2 (d = 1/256 px,
    # 131 km) is clipped to the largest storable depth and counted
    np.testing.assert_array_equal(sample.depth, [[128.0, 32.0, 43691 / 256, 0.0, 0.0, 65535 / 256]])
    assert sample.notes == {"depth_clipped_px": 1}
    assert sample.depth.dtype == np.float32 and validate(sample) == []


def test_stereo_depth_with_the_real_camera_is_baseline_fx_over_d_quantized(tmp_path):
    camera = read_json(fixture_path(*CAMERA_SAMPLE))
    b, fx = camera["extrinsic"]["baseline"], camera["intrinsic"]["fx"]
    d0 = np.array([2.0, 7.5, 10.0, 63.25, 200.0])
    p = (1 + 256 * d0).astype(np.uint16)[None]
    conv = CityscapesConverter(depth_root(tmp_path / "raw", p, b, fx))
    depth = conv.convert(conv.frames()[0]).depth[0]
    expected = [round(b * fx / d * 256) / 256 for d in d0]
    assert expected[2] == 12124 / 256  # d = 10 px: 0.209313 m * 2262.52 px / 10 px = 47.3575 m
    np.testing.assert_array_equal(depth, np.array(expected, np.float32))


# ---- the synthetic dataset --------------------------------------------------------------------------


def test_synth_is_registered_and_writes_two_train_cities_and_one_val_city(synth):
    assert SYNTHESIZERS["cityscapes"] is synth_cityscapes
    cities = {split: sorted(p.name for p in (synth / "leftImg8bit" / split).iterdir()) for split in ("train", "val")}
    assert cities == {"train": ["aachen", "bochum"], "val": ["frankfurt"]}
    assert not (synth / "leftImg8bit" / "test").exists()
    for split, ids in SYNTH_IDS.items():
        for frame_id in ids:
            city = frame_id.split("_")[0]
            image = cv2.imread(str(synth / f"leftImg8bit/{split}/{city}/{frame_id}_leftImg8bit.png"))
            assert image.shape == (128, 256, 3)
    assert not list(synth.rglob("*.tmp"))


def test_synth_file_formats_match_the_real_fixtures(synth):
    real = fixture_path(*REAL_FRAME)
    for kind in ("labelIds", "instanceIds"):
        want = cv2.imread(str(real / REAL_GT.format(kind)), cv2.IMREAD_UNCHANGED)
        got = cv2.imread(
            str(synth / f"gtFine/train/aachen/aachen_000000_000019_gtFine_{kind}.png"), cv2.IMREAD_UNCHANGED
        )
        assert (got.dtype, got.ndim) == (want.dtype, want.ndim), kind
    disparity = cv2.imread(
        str(synth / "disparity/train/aachen/aachen_000000_000019_disparity.png"), cv2.IMREAD_UNCHANGED
    )
    assert disparity.dtype == np.uint16 and disparity.shape == (128, 256)
    color = cv2.imread(str(synth / "gtFine/train/aachen/aachen_000000_000019_gtFine_color.png"), cv2.IMREAD_UNCHANGED)
    assert color.shape == (128, 256, 4)

    def keys(doc):
        return {k: keys(v) for k, v in doc.items()} if isinstance(doc, dict) else None

    camera = read_json(synth / "camera/train/aachen/aachen_000000_000019_camera.json")
    assert keys(camera) == keys(read_json(fixture_path(*CAMERA_SAMPLE)))
    boxes = read_json(synth / "gtBbox3d/train/aachen/aachen_000000_000019_gtBbox3d.json")
    real_boxes = read_json(fixture_path(*BOX_SAMPLE))
    assert keys(boxes["sensor"]) == keys(real_boxes["sensor"])
    assert keys(boxes["objects"][0]) == keys(real_boxes["objects"][0])
    assert set(boxes) == set(real_boxes) | {"ignore"}


def test_synth_instance_ids_encode_the_label_ids_as_in_the_real_files(synth):
    real = fixture_path(*REAL_FRAME)
    for folder, stem in (
        (real, "gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_{}.png"),
        (synth, "gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_{}.png"),
    ):
        labels = cv2.imread(str(folder / stem.format("labelIds")), cv2.IMREAD_UNCHANGED)
        instances = cv2.imread(str(folder / stem.format("instanceIds")), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(np.where(instances >= 1000, instances // 1000, instances), labels)
        assert (instances >= 1000).any()


def test_synth_is_deterministic_per_seed(tmp_path, synth):
    def files(root: Path) -> dict[str, bytes]:
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    synth_cityscapes(tmp_path / "a", seed=0)
    synth_cityscapes(tmp_path / "b", seed=1)
    assert files(tmp_path / "a") == files(synth)
    other = files(tmp_path / "b")
    assert other.keys() == files(synth).keys() and other != files(synth)


def test_synth_frames_have_the_tasks_whose_files_exist(synth_samples):
    tasks = {fid: s.tasks for fid, (_, s) in synth_samples.items()}
    assert tasks == {
        "aachen_000000_000019": ("seg", "depth", "det2d", "det3d"),
        "aachen_000001_000019": ("seg", "depth", "det2d", "det3d"),
        "bochum_000000_000313": ("seg", "det2d", "det3d"),  # no disparity, no camera json
        "frankfurt_000000_000294": ("seg", "depth", "det2d", "det3d"),
        "frankfurt_000001_000019": ("seg", "depth"),  # no gtBbox3d
    }
    splits = {f.split: [] for f, _ in synth_samples.values()}
    for f, s in synth_samples.values():
        splits[f.split].append(f.id)
        assert s.key == f"cityscapes_{f.split}_{f.id}" and s.sequence == f.id.rsplit("_", 1)[0]
        assert validate(s, len(DET_CLASSES)) == []
    assert splits == SYNTH_IDS


def test_synth_K_comes_from_the_camera_json_or_else_the_sensor_block(synth, synth_samples):
    for fid, (frame, sample) in synth_samples.items():
        if "camera" in frame.paths:
            i = read_json(frame.paths["camera"])["intrinsic"]
        else:
            i = read_json(frame.paths["boxes"])["sensor"]
            assert fid == "bochum_000000_000313"
        np.testing.assert_array_equal(sample.K, [[i["fx"], 0, i["u0"]], [0, i["fy"], i["v0"]], [0, 0, 1]])


def test_synth_seg_is_the_official_mapping_of_its_labelids(synth_samples):
    for frame, sample in synth_samples.values():
        label_ids = cv2.imread(str(frame.paths["label"]), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(sample.seg, np.vectorize(OFFICIAL_TRAIN_ID.get, otypes=[np.uint8])(label_ids))
        present = set(np.unique(sample.seg).tolist())
        assert {SEG_CLASSES.index(c) for c in ("road", "sidewalk", "building", "sky", "car")} <= present
        assert IGNORE_INDEX in present  # ego vehicle and rectification border


def _back_project(sample, sensor_T: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(N, 3) V-frame points of the depth pixels under ``mask``."""
    v, u = np.nonzero(mask & (sample.depth > 0))
    z = sample.depth[v, u].astype(np.float64)
    K = sample.K
    x, y = (u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z
    camera = np.column_stack([z, -x, -y])  # optical -> C (forward-left-up)
    return (camera - sensor_T[:, 3]) @ sensor_T[:, :3]  # C -> V (orthonormal rotation)


def test_synth_disparity_of_road_pixels_lies_on_the_ground_plane(synth_samples):
    checked = 0
    for frame, sample in synth_samples.values():
        if sample.depth is None or "boxes" not in frame.paths:
            continue
        T = np.array(read_json(frame.paths["boxes"])["sensor"]["sensor_T_ISO_8855"])
        points = _back_project(sample, T, sample.seg == SEG_CLASSES.index("road"))
        assert len(points) > 3000
        assert np.abs(points[:, 2]).max() < 0.01  # z = 0 in V, up to disparity and depth quantization
        checked += 1
    assert checked == 3


def test_synth_disparity_of_vehicle_pixels_lies_on_their_3d_box_surface(synth_samples):
    checked = 0
    for frame, sample in synth_samples.values():
        if sample.depth is None or "boxes" not in frame.paths:
            continue
        doc = read_json(frame.paths["boxes"])
        T = np.array(doc["sensor"]["sensor_T_ISO_8855"])
        instances = cv2.imread(str(frame.paths["label"]).replace("labelIds", "instanceIds"), cv2.IMREAD_UNCHANGED)
        for obj in doc["objects"]:
            points = _back_project(sample, T, instances == obj["instanceId"])
            local = rotate(np.array(obj["3d"]["rotation"]) * [1, -1, -1, -1], points - obj["3d"]["center"])
            ratio = np.abs(local) / (0.5 * np.array(obj["3d"]["dimensions"]))  # (N, 3), 1 on a face
            assert len(points) >= 5
            assert ratio.max() < 1.05 and np.all(ratio.max(axis=1) > 0.93), obj["instanceId"]
            checked += 1
    assert checked >= 6


def test_synth_2d_boxes_fit_the_3d_boxes_and_the_instance_masks(synth_samples):
    for frame, sample in synth_samples.values():
        if sample.det2d is None:
            continue
        doc = read_json(frame.paths["boxes"])
        instances = cv2.imread(str(frame.paths["label"]).replace("labelIds", "instanceIds"), cv2.IMREAD_UNCHANGED)
        extent = geo.box_extent_in_image(geo.box3d_corners(sample.det3d.boxes, sample.det3d.rotation), sample.K)
        assert np.all(np.abs(extent - sample.det2d.amodal) < 1.0)  # x = floor(u_min), x + w = floor(u_max)
        for i, obj in enumerate(doc["objects"]):
            rows, cols = np.nonzero(instances == obj["instanceId"])
            np.testing.assert_array_equal(sample.det2d.boxes[i], [cols.min(), rows.min(), cols.max(), rows.max()])
            assert np.all(sample.det2d.boxes[i, :2] >= sample.det2d.amodal[i, :2])
            assert np.all(sample.det2d.boxes[i, 2:] <= sample.det2d.amodal[i, 2:])
        assert len(sample.det2d.boxes) == len(sample.det3d.boxes) == len(doc["objects"]) >= 2
        assert sample.det2d.native_class == sample.det3d.native_class == tuple(o["label"] for o in doc["objects"])
        np.testing.assert_array_equal(
            sample.det2d.ignore, [[x, y, x + w, y + h] for x, y, w, h in (e["2d"] for e in doc["ignore"])]
        )
        assert sample.det3d.rotation is not None  # the camera pitch tilts every box


def test_synth_image_shows_the_labelled_classes(synth_samples):
    """Learnable structure: sky is bright blue-ish, road grey and darker than the sky."""
    for _, sample in synth_samples.values():
        image = sample.image.astype(np.float64)
        sky = image[sample.seg == SEG_CLASSES.index("sky")].mean(0)
        road = image[sample.seg == SEG_CLASSES.index("road")].mean(0)
        assert sky[2] > sky[0] and sky.mean() > road.mean() + 40
        assert np.ptp(road) < 15  # grey


def test_resizing_keeps_3d_boxes_and_amodal_boxes_consistent(synth_samples):
    _, sample = synth_samples["aachen_000000_000019"]
    small = resize_sample(sample, 128)
    assert small.size == (64, 128) and small.det2d.amodal.shape == sample.det2d.amodal.shape
    extent = geo.box_extent_in_image(geo.box3d_corners(small.det3d.boxes, small.det3d.rotation), small.K)
    assert np.all(np.abs(extent - small.det2d.amodal) < 0.75)


# ---- splits, options, taxonomy --------------------------------------------------------------------


def _copy_frame(synth: Path, root: Path, src_id: str, dst: tuple[str, str]) -> None:
    """Copy every file of synth frame ``src_id`` to ``dst`` = (split, new id) under ``root``."""
    dst_split, dst_id = dst
    for path in sorted(synth.rglob(f"{src_id}_*")):
        package = path.relative_to(synth).parts[0]
        target = root / package / dst_split / dst_id.split("_")[0] / path.name.replace(src_id, dst_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)


def test_test_split_gets_depth_and_K_but_no_withheld_labels(synth, tmp_path):
    root = tmp_path / "raw"
    _copy_frame(synth, root, "aachen_000000_000019", ("test", "berlin_000000_000019"))
    assert (root / "gtFine/test/berlin/berlin_000000_000019_gtFine_labelIds.png").exists()
    conv = CityscapesConverter(root)
    [frame] = conv.frames()
    sample = conv.convert(frame)
    assert (frame.split, sample.tasks) == ("test", ("depth",))
    assert sample.K is not None


def test_train_extra_is_converted_into_train_only_when_asked(synth, tmp_path):
    root = tmp_path / "raw"
    _copy_frame(synth, root, "aachen_000000_000019", ("train", "aachen_000000_000019"))
    _copy_frame(synth, root, "frankfurt_000001_000019", ("train_extra", "augsburg_000000_000019"))
    shutil.rmtree(root / "gtFine" / "train_extra")  # train_extra has coarse labels only
    _copy_frame(synth, root, "frankfurt_000001_000019", ("demoVideo", "stuttgart_000000_000019"))
    assert [f.id for f in CityscapesConverter(root).frames()] == ["aachen_000000_000019"]
    conv = CityscapesConverter(root, CityscapesOptions(train_extra=True))
    frames = {f.id: f for f in conv.frames()}
    assert sorted(frames) == ["aachen_000000_000019", "augsburg_000000_000019"]
    extra = conv.convert(frames["augsburg_000000_000019"])
    assert extra.split == "train" and extra.tasks == ("depth",)


def test_taxonomy_file_can_turn_a_class_into_ignore_regions(synth_samples, tmp_path):
    frame, sample = synth_samples["aachen_000000_000019"]
    taxonomy = tmp_path / "taxonomy.json"
    taxonomy.write_text(json.dumps({"det": {"cityscapes": {"car": "ignore"}}}))
    root = Path(str(frame.paths["image"]).split("/leftImg8bit/")[0])
    conv = CityscapesConverter(root, taxonomy=str(taxonomy))
    out = conv.convert(frame)
    cars = np.array([n == "car" for n in sample.det2d.native_class])
    assert cars.any() and "car" not in out.det2d.native_class
    np.testing.assert_array_equal(out.det2d.ignore, np.concatenate([sample.det2d.ignore, sample.det2d.amodal[cars]]))
    np.testing.assert_array_equal(out.det3d.boxes, sample.det3d.boxes[~cars])


# ---- through the CLI ---------------------------------------------------------------------------------


def test_cli_ingest_of_the_synthetic_dataset(cli, synth, synth_samples, tmp_path):
    out = tmp_path / "shards"
    result = ingest_cli(cli, "cityscapes", synth, out, "--image-format", "png")
    assert result.code == 0, result.err
    assert "cityscapes/train: 3 samples" in result.out and "cityscapes/val: 2 samples" in result.out
    rows = {r["id"]: r for r in read_manifest(out, "cityscapes")}
    assert sorted(rows) == sorted(synth_samples)
    for fid, (_, sample) in synth_samples.items():
        row = rows[fid]
        assert row["sequence"] == sample.sequence
        assert [t for t in ("seg", "depth", "det2d", "det3d") if row[f"has_{t}"]] == list(sample.tasks)
    assert read_rejects(out, "cityscapes") == []
    got = ShardSet.open(out).read_sample("cityscapes_train_aachen_000000_000019")
    want = synth_samples["aachen_000000_000019"][1]
    np.testing.assert_array_equal(got.det2d.amodal, want.det2d.amodal)
    np.testing.assert_array_equal(got.det3d.rotation, want.det3d.rotation)
    np.testing.assert_array_equal(got.depth, want.depth)
    assert json.loads((out / "cityscapes" / "classes.json").read_text())["det3d"] == list(DET_CLASSES)
