"""The det3d task: geometry, targets, loss, decoding, the Cityscapes-3D score against cityscapesScripts,
the BEV AP against a plain reference, and the Cityscapes-3D export."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    BOX_SAMPLE,
    assert_absent_task_gives_zero_loss_and_gradient,
    batch_from_shards,
    det3d_perfect_output,
    fixture_path,
    monodle_angle2class,
    prediction_read_error,
    random_features,
    write_task_predictions,
)
from pyquaternion import Quaternion

from mtl_data.errors import MtlDataError
from mtl_data.ingest import CONVERTERS
from mtl_data.schema import cityscapes_geometry as cg
from mtl_data.schema import geometry as geo
from mtl_data.shards.reader import ShardSet
from mtl_data.train.tasks import FeatureSpec, create_task, view_of
from mtl_data.train.tasks.det3d import (
    CITYSCAPES3D_EVAL_LABELS,
    Det3DPrediction,
    amodal_boxes,
    decode_multibin,
    multibin_targets,
    rotation_to_yaw_pitch_roll_torch,
    stored_intrinsics,
)

CITY_KEY = "cityscapes_val_lindau_000000_000019"
KITTI_KEYS = ["kitti_train_000000", "kitti_train_000001"]
SIZE = (128, 256)
REAL_BOXES = json.loads(fixture_path(*BOX_SAMPLE).read_text())


@pytest.fixture(scope="module")
def task():
    return create_task("det3d")


@pytest.fixture(scope="module")
def shards(real_shards) -> ShardSet:
    return ShardSet.open(real_shards)


# ---- geometry ----------------------------------------------------------------------------------


def test_yaw_pitch_roll_round_trip_on_random_rotations():
    rng = np.random.default_rng(1)
    yaw, pitch, roll = rng.uniform(-np.pi, np.pi, 500), rng.uniform(-1.5, 1.5, 500), rng.uniform(-np.pi, np.pi, 500)
    rotation = geo.yaw_pitch_roll_to_rotation(yaw, pitch, roll)
    np.testing.assert_allclose(
        rotation @ np.swapaxes(rotation, 1, 2), np.broadcast_to(np.eye(3), (500, 3, 3)), atol=1e-12
    )
    back = geo.rotation_to_yaw_pitch_roll(rotation)
    np.testing.assert_allclose(np.stack(back), np.stack([yaw, pitch, roll]), atol=1e-9)
    # and any rotation (uniform quaternions) comes back from its angles
    any_rot = cg.quaternion_to_matrix(rng.normal(size=(500, 4)))
    np.testing.assert_allclose(
        geo.yaw_pitch_roll_to_rotation(*geo.rotation_to_yaw_pitch_roll(any_rot)), any_rot, atol=1e-9
    )


def test_upright_box_has_zero_pitch_and_roll_and_the_kitti_yaw():
    yaw = np.array([-3.0, -1.0, 0.0, 0.5, 3.1])
    np.testing.assert_array_equal(geo.yaw_pitch_roll_to_rotation(yaw, 0.0, 0.0), geo.yaw_to_rotation(yaw))
    y, p, r = geo.rotation_to_yaw_pitch_roll(geo.yaw_to_rotation(yaw))
    np.testing.assert_allclose(y, yaw, atol=1e-15)
    assert np.all(p == 0) and np.all(r == 0)


def test_pitch_turns_the_nose_down_about_the_width_axis():
    rotation = geo.yaw_pitch_roll_to_rotation(0.0, 0.1, 0.0)
    np.testing.assert_allclose(rotation[:, 0], [math.cos(0.1), math.sin(0.1), 0.0])  # length axis dips (+y down)
    np.testing.assert_allclose(rotation[:, 2], [0.0, 0.0, 1.0])  # width axis unchanged


def test_real_cityscapes_box_decomposes_and_flips_as_documented(shards):
    det = shards.read_sample(CITY_KEY).det3d
    [rotation] = det.rotation
    yaw, pitch, roll = (float(a) for a in geo.rotation_to_yaw_pitch_roll(rotation))
    np.testing.assert_allclose(geo.yaw_pitch_roll_to_rotation(yaw, pitch, roll), rotation, atol=1e-12)
    # the camera's pitch (0.038 rad) tilts the box; its stored yaw is atan2(R02, R00), a hair away
    assert 0.02 < abs(pitch) + abs(roll) < 0.1
    assert abs(yaw - det.boxes[0, 6]) < 2e-3
    mirrored = np.diag([-1.0, 1.0, 1.0]) @ rotation @ np.diag([1.0, 1.0, -1.0])  # transforms' flip
    flipped = geo.rotation_to_yaw_pitch_roll(mirrored)
    np.testing.assert_allclose(
        [float(np.cos(flipped[0] - (np.pi - yaw))), flipped[1], flipped[2]], [1.0, pitch, -roll], atol=1e-12
    )


def test_torch_decomposition_matches_numpy():
    rotation = cg.quaternion_to_matrix(np.random.default_rng(2).normal(size=(50, 4)))
    got = rotation_to_yaw_pitch_roll_torch(torch.from_numpy(rotation))
    np.testing.assert_allclose(
        np.stack([g.numpy() for g in got]), np.stack(geo.rotation_to_yaw_pitch_roll(rotation)), atol=1e-12
    )


def test_optical_boxes_go_back_to_the_real_vehicle_frame_annotation(shards):
    sample = shards.read_sample(CITY_KEY)
    assert sample.extra["sensor_T_ISO_8855"] == REAL_BOXES["sensor"]["sensor_T_ISO_8855"]
    center, dims, rotation = cg.optical_boxes_to_frame(
        sample.det3d.boxes, sample.det3d.rotation, np.array(sample.extra["sensor_T_ISO_8855"])
    )
    obj = REAL_BOXES["objects"][0]["3d"]
    np.testing.assert_allclose(center[0], obj["center"], atol=1e-12)
    np.testing.assert_allclose(dims[0], obj["dimensions"], atol=1e-12)
    q = cg.matrix_to_quaternion(rotation)[0]
    np.testing.assert_allclose(q * np.sign(q[0] * obj["rotation"][0]), obj["rotation"], atol=1e-12)
    # without an extrinsic the boxes stay in the camera frame C: (z, -x, -y) of the optical centre
    center_c, _, _ = cg.optical_boxes_to_frame(sample.det3d.boxes, sample.det3d.rotation, None)
    x, y, z = sample.det3d.boxes[0, :3]
    np.testing.assert_allclose(center_c[0], [z, -x, -y])


def test_cityscapes_ingest_keeps_the_camera_extrinsic_from_the_camera_json_alone(tmp_path, big_image):
    frame = "lindau_000000_000019"
    (tmp_path / "leftImg8bit/test/lindau").mkdir(parents=True)
    (tmp_path / "camera/test/lindau").mkdir(parents=True)
    shutil.copy(big_image, tmp_path / f"leftImg8bit/test/lindau/{frame}_leftImg8bit.png")
    camera = json.loads(fixture_path("cityscapes", "camera_sample", "quoted_camera.json").read_text())
    (tmp_path / f"camera/test/lindau/{frame}_camera.json").write_text(json.dumps(camera))
    conv = CONVERTERS["cityscapes"](tmp_path)
    [f] = conv.frames()
    sample = conv.convert(f)
    np.testing.assert_allclose(sample.extra["sensor_T_ISO_8855"], REAL_BOXES["sensor"]["sensor_T_ISO_8855"], atol=1e-12)
    del camera["extrinsic"]["roll"]  # an incomplete pose gives no transform, and no error
    (tmp_path / f"camera/test/lindau/{frame}_camera.json").write_text(json.dumps(camera))
    assert "sensor_T_ISO_8855" not in conv.convert(f).extra


def test_quaternion_helpers_match_pyquaternion():
    q = np.random.default_rng(3).normal(size=(100, 4))
    rotation = cg.quaternion_to_matrix(q)
    back = cg.matrix_to_quaternion(rotation)
    np.testing.assert_allclose(cg.quaternion_to_matrix(back), rotation, atol=1e-12)
    expected = np.array([Quaternion(v).yaw_pitch_roll for v in q])
    np.testing.assert_allclose(np.stack(cg.quaternion_yaw_pitch_roll(back), axis=1), expected, atol=1e-12)


def test_amodal_boxes_match_cityscapesscripts_also_across_the_camera_plane():
    from cityscapesscripts.helpers.box3dImageTransform import Box3dImageTransform, Camera

    sensor = REAL_BOXES["sensor"]
    camera = Camera(sensor["fx"], sensor["fy"], sensor["u0"], sensor["v0"], sensor["sensor_T_ISO_8855"])
    K = cg.intrinsics(sensor["fx"], sensor["fy"], sensor["u0"], sensor["v0"])
    T = np.array(sensor["sensor_T_ISO_8855"])
    rng = np.random.default_rng(4)
    n = 60
    # boxes around the camera (x of V near 1.7 m: many cross the camera plane), some far ahead
    centers = np.column_stack([rng.uniform(-2, 30, n), rng.uniform(-8, 8, n), rng.uniform(-0.5, 2.5, n)])
    dims = rng.uniform(0.5, 6.0, (n, 3))
    quats = rng.normal(size=(n, 4))
    boxes, rotation = cg.vehicle_boxes_to_optical(centers, dims, quats, T)
    ours = amodal_boxes(boxes, rotation, K, (1024, 2048))
    theirs = []
    for c, d, q in zip(centers, dims, quats):
        tf = Box3dImageTransform(camera)
        tf.initialize_box(d.tolist(), Quaternion(q).normalised.elements.tolist(), c.tolist())
        theirs.append(tf.get_amodal_box_2d())
    theirs = np.array(theirs, dtype=np.float64)
    crossing = np.array([(geo.box3d_corners(b[None], r[None])[0, :, 2] <= 0.01).any() for b, r in zip(boxes, rotation)])
    assert 5 < crossing.sum() < n - 5  # both kinds are tested
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


# ---- head, targets, loss ----------------------------------------------------------------------


def test_head_returns_every_output_on_the_stride_4_map(task):
    head = task.build_head(FeatureSpec(channels=8))
    out = head(random_features({"image": torch.zeros(2, 3, *SIZE)}), SIZE)
    shapes = {k: tuple(v.shape) for k, v in out.items()}
    assert shapes == {
        "heatmap": (2, task.num_classes, 32, 64),
        "offset": (2, 2, 32, 64),
        "depth": (2, 1, 32, 64),
        "size": (2, 3, 32, 64),
        "orientation": (2, 24, 32, 64),  # 12 bins: 12 logits, 12 residuals
        "pitch_roll": (2, 48, 32, 64),  # the same for pitch, then roll
    }
    assert torch.all(head.branches["heatmap"][-1].bias == -2.19)
    with pytest.raises(MtlDataError, match="stride 4"):
        task.build_head(FeatureSpec(channels=8, strides=(8, 16, 32)))


def _match_to_truth(task, batch, preds, shards, index: int):
    """(prediction, truth, trained) of sample ``index``: the trained GT rows and the decoded boxes
    nearest to each."""
    t = task.targets(batch, (SIZE[0] // 4, SIZE[1] // 4))
    trained = t.valid[index].numpy()[: int(batch["det3d_count"][index])]
    truth = task.ground_truth(shards.read_sample(batch["key"][index]))
    pred = preds[index]
    assert len(pred) == trained.sum() > 0
    gt_boxes = truth.boxes[trained]
    order = [int(np.argmin(np.linalg.norm(pred.boxes[:, :3] - c, axis=1))) for c in gt_boxes[:, :3]]
    assert sorted(order) == list(range(len(pred)))
    return pred, truth, trained, order


@pytest.mark.parametrize("flipped", [False, True], ids=["as_stored", "flipped"])
@pytest.mark.parametrize("keys", [KITTI_KEYS, [CITY_KEY]], ids=["kitti", "cityscapes"])
def test_perfect_outputs_decode_to_the_ground_truth_boxes(task, real_shards, shards, keys, flipped):
    batch = batch_from_shards(real_shards, keys, SIZE, letterbox=True, flip=flipped)
    assert bool(batch["flipped"].all()) == flipped
    preds = task.decode(det3d_perfect_output(task, batch), batch)
    for i in range(len(keys)):
        pred, truth, trained, order = _match_to_truth(task, batch, preds, shards, i)
        pred = dataclasses.replace(
            pred, **{f: getattr(pred, f)[order] for f in ("boxes", "rotation", "scores", "classes", "boxes2d")}
        )
        np.testing.assert_allclose(pred.boxes[:, :3], truth.boxes[trained, :3], rtol=2e-6, atol=1e-5)
        np.testing.assert_allclose(pred.boxes[:, 3:], truth.boxes[trained, 3:], atol=1e-5)
        np.testing.assert_allclose(pred.rotation, truth.rotation[trained], atol=1e-5)
        np.testing.assert_array_equal(pred.classes, truth.classes[trained])
        assert np.all(pred.scores > 0.99)
        expected2d = amodal_boxes(truth.boxes[trained], truth.rotation[trained], truth.K, truth.size)
        np.testing.assert_allclose(pred.boxes2d, expected2d, atol=2e-3)
    if keys == [CITY_KEY]:  # the real amodal annotation is this box's projection, to a pixel
        np.testing.assert_allclose(preds[0].boxes2d, shards.read_sample(CITY_KEY).det2d.amodal, atol=1.2)


@pytest.mark.parametrize("flipped", [False, True])
def test_stored_intrinsics_undo_the_loader_placement(real_shards, shards, flipped):
    keys = [*KITTI_KEYS, CITY_KEY]
    for letterbox in (False, True):
        batch = batch_from_shards(real_shards, keys, SIZE, letterbox=letterbox, flip=flipped)
        assert batch["flipped"].tolist() == [flipped] * len(keys)
        for i, key in enumerate(keys):
            K = stored_intrinsics(batch["K"][i].double().numpy(), view_of(batch, i))
            np.testing.assert_allclose(K, shards.read_sample(key).K, rtol=1e-6, atol=1e-3)


def test_pitch_and_roll_are_trained_only_where_the_source_has_them(task, real_shards):
    batch = batch_from_shards(real_shards, [KITTI_KEYS[1], CITY_KEY], SIZE, letterbox=True)
    t = task.targets(batch, (32, 64))
    assert t.valid[0].sum() == 3 and not t.full[0].any()
    assert t.full[1, 0] and t.full[1].sum() == 1
    pitch, roll = decode_multibin(t.pitch_roll[1, :1].double().numpy(), task.config.heading_bins)[0]
    assert 0.01 < abs(pitch) < 0.1  # the real box's tilt
    assert not t.pitch_roll[0].any() and not t.pitch_roll[1, 1:].any()  # no target on the other rows
    assert t.heatmap.amax(dim=(2, 3))[0].tolist().count(1.0) == 3  # truck, car, cyclist peaks
    good = det3d_perfect_output(task, batch)
    bad = {**good, "pitch_roll": good["pitch_roll"] + 0.5}  # the logits' softmax is unchanged, residuals are 0.5 off
    delta = task.loss(bad, batch) - task.loss(good, batch)
    assert delta[0] == 0 and float(delta[1]) == pytest.approx(2 * 0.5, abs=1e-5)  # pitch's and roll's L1


def test_absent_task_gives_exactly_zero_loss_and_zero_head_gradient(task, real_shards):
    keys = ["gtsrb_train_00000_00000_00000", "tusimple_train_clips_0601_1494453497604532231_20"]
    batch = batch_from_shards(real_shards, keys, SIZE)
    assert_absent_task_gives_zero_loss_and_gradient(task, task.build_head(FeatureSpec(channels=8)), batch)


def test_loss_is_finite_without_boxes_and_zero_without_K(task, real_shards):
    batch = batch_from_shards(real_shards, [*KITTI_KEYS, CITY_KEY], SIZE, letterbox=True)
    batch["det3d_count"][0] = 0  # labelled, but no box
    batch["K_known"][1] = False  # labelled, boxes, no camera
    batch["K"][1] = 0.0
    head = task.build_head(FeatureSpec(channels=8))
    per_sample = task.loss(head(random_features(batch), SIZE), batch)
    assert torch.isfinite(per_sample).all()
    assert per_sample[0] > 0 and per_sample[1] == 0 and per_sample[2] > 0
    task.batch_loss(head(random_features(batch), SIZE), batch).backward()
    grads = [p.grad for p in head.parameters()]
    assert all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


# ---- the Cityscapes-3D detection score against cityscapesScripts ------------------------------

#: (label, typical dims l, w, h) of the generated objects; caravan is not scored (other_vehicle)
_OBJECT_KINDS = [
    ("car", (4.3, 1.8, 1.5)),
    ("car", (4.6, 1.9, 1.6)),
    ("truck", (8.0, 2.5, 3.2)),
    ("bus", (11.0, 2.6, 3.1)),
    ("train", (20.0, 3.0, 3.8)),
    ("motorcycle", (2.1, 0.8, 1.4)),
    ("bicycle", (1.8, 0.6, 1.6)),
    ("caravan", (6.0, 2.3, 2.8)),
]


def _v_quaternion(yaw: float, pitch: float, roll: float) -> list[float]:
    q = (
        Quaternion(axis=[0, 0, 1], angle=yaw)
        * Quaternion(axis=[0, 1, 0], angle=pitch)
        * Quaternion(axis=[1, 0, 0], angle=roll)
    )
    return [float(v) for v in q.elements]


def _official_amodal(center, dims, quat) -> list[float] | None:
    """``[x, y, w, h]`` of a box as cityscapesScripts projects it; None if (nearly) out of view."""
    from cityscapesscripts.helpers.box3dImageTransform import Box3dImageTransform, Camera

    s = REAL_BOXES["sensor"]
    tf = Box3dImageTransform(Camera(s["fx"], s["fy"], s["u0"], s["v0"], s["sensor_T_ISO_8855"]))
    tf.initialize_box(list(dims), list(quat), list(center))
    x1, y1, x2, y2 = tf.get_amodal_box_2d()
    return None if x2 - x1 < 4 or y2 - y1 < 4 else [x1, y1, x2 - x1, y2 - y1]


def _scenario(rng: np.random.Generator, frames: int = 8) -> tuple[list[dict], list[list[dict]]]:
    """gtBbox3d documents (the real one first) and, per frame, predicted objects in V.

    Perturbations: jittered centres, sizes, yaw, pitch and roll; misses; double detections;
    class confusions; false positives, one inside an ignore region; objects beyond 100 m. Scores
    sit on the evaluator's confidence grid, so ``score >= s`` at each threshold is tested.
    """
    grid = np.arange(0.0, 1.01, 0.02)  # Box3dEvaluator's thresholds
    docs, predictions = [], []
    for f in range(frames):
        doc = json.loads(json.dumps(REAL_BOXES))
        doc["ignore"] = []
        if f > 0:
            doc["objects"] = []
            while len(doc["objects"]) < 9:
                label, base = _OBJECT_KINDS[int(rng.integers(len(_OBJECT_KINDS)))]
                x = float(rng.uniform(7, 125))
                center = [x, float(rng.uniform(-0.3, 0.3) * x), float(rng.uniform(0.4, 1.2))]
                dims = [float(d * rng.uniform(0.85, 1.15)) for d in base]
                quat = _v_quaternion(rng.uniform(-np.pi, np.pi), rng.normal(0, 0.03), rng.normal(0, 0.03))
                amodal = _official_amodal(center, dims, quat)
                if amodal is not None:
                    doc["objects"].append(
                        {
                            "2d": {"amodal": amodal, "modal": amodal},
                            "3d": {"center": center, "dimensions": dims, "rotation": quat, "format": "CRS_ISO8855"},
                            "label": label,
                            "score": 1.0,
                            "instanceId": 1000 * f + len(doc["objects"]),
                            "truncation": 0.0,
                            "occlusion": 0.0,
                        }
                    )
        preds = []
        for obj in doc["objects"]:
            kind = rng.random()
            if kind < 0.15:
                continue  # a miss
            if kind < 0.35:  # a prediction whose amodal IoU is a hair from 0.7
                preds.append(_borderline(obj, rng, float(grid[rng.integers(3, 51)])))
                continue
            for _ in range(1 + int(rng.random() < 0.1)):  # sometimes a double detection
                pred = _jittered(obj, rng, 1.0, float(grid[rng.integers(3, 51)]))
                if rng.random() < 0.1:  # class confusion
                    pred["label"] = _OBJECT_KINDS[int(rng.integers(7))][0]
                preds.append(pred)
        if f == 1:  # exact copies at score 0: they count at the threshold 0 only (score >= s)
            preds += [_jittered(obj, rng, 0.0, 0.0) for obj in doc["objects"][:3]]
        for _ in range(2):  # false positives somewhere in view
            x = float(rng.uniform(8, 60))
            preds.append(
                {
                    "center": np.array([x, rng.uniform(-0.25, 0.25) * x, 0.8]),
                    "dims": np.array([4.2, 1.8, 1.5]),
                    "quat": _v_quaternion(rng.uniform(-3, 3), 0, 0),
                    "label": "car",
                    "score": float(grid[rng.integers(2, 36)]),
                }
            )
        if f == 2:  # a confident false positive inside an ignore region
            center, dims, quat = [20.0, -4.0, 0.8], [4.2, 1.8, 1.5], _v_quaternion(0.3, 0, 0)
            x, y, w, h = _official_amodal(center, dims, quat)
            doc["ignore"] = [{"2d": [x - 10, y - 10, w + 20, h + 20]}]
            preds.append(
                {"center": np.array(center), "dims": np.array(dims), "quat": quat, "label": "car", "score": 0.95}
            )
        docs.append(doc)
        predictions.append(preds)
    return docs, predictions


def _jittered(obj: dict, rng: np.random.Generator, spread: float, score: float) -> dict:
    """A prediction of a gtBbox3d object: centre, size, yaw, pitch and roll jittered by ``spread``."""
    three = obj["3d"]
    center = np.array(three["center"]) + spread * rng.normal(0, 0.004 * three["center"][0] + 0.03, 3)
    dims = np.array(three["dimensions"]) * (1 + spread * rng.uniform(-0.08, 0.08, 3))
    yaw, pitch, roll = Quaternion(three["rotation"]).yaw_pitch_roll
    quat = _v_quaternion(
        yaw + spread * rng.normal(0, 0.2), pitch + spread * rng.normal(0, 0.04), roll + spread * rng.normal(0, 0.04)
    )
    return {"center": center, "dims": dims, "quat": quat, "label": obj["label"], "score": score}


def _borderline(obj: dict, rng: np.random.Generator, score: float) -> dict:
    """A jittered prediction whose amodal IoU with ``obj`` (cityscapesScripts' arithmetic) is in
    (0.69, 0.71), so the IoU arithmetic and the 0.7 rule decide its fate; any jitter if none is found."""
    from cityscapesscripts.evaluation.objectDetectionHelpers import calcIouMatrix

    x, y, w, h = obj["2d"]["amodal"]
    gt = np.array([[x, y, x + w, y + h]])
    for _ in range(500):
        pred = _jittered(obj, rng, float(rng.uniform(1.0, 6.0)), score)
        box = _official_amodal(pred["center"], pred["dims"], pred["quat"])
        if (
            box is not None
            and 0.69 < calcIouMatrix(gt, np.array([[box[0], box[1], box[0] + box[2], box[1] + box[3]]]))[0, 0] < 0.71
        ):
            return pred
    return pred


def _write_raw_root(root: Path, docs: list[dict], big_image: Path) -> list[str]:
    frames = []
    for f, doc in enumerate(docs):
        frame = f"lindau_000000_{19 + f:06d}"
        (root / "leftImg8bit/val/lindau").mkdir(parents=True, exist_ok=True)
        (root / "gtBbox3d/val/lindau").mkdir(parents=True, exist_ok=True)
        shutil.copy(big_image, root / f"leftImg8bit/val/lindau/{frame}_leftImg8bit.png")
        (root / f"gtBbox3d/val/lindau/{frame}_gtBbox3d.json").write_text(json.dumps(doc))
        frames.append(frame)
    return frames


_OFFICIAL = """
import json, sys
from cityscapesscripts.evaluation.evalObjectDetection3d import evaluate3dObjectDetection
from cityscapesscripts.evaluation.objectDetectionHelpers import EvaluationParameters
gt, pred, out = sys.argv[1:4]
params = EvaluationParameters(json.loads(sys.argv[4]), min_iou_to_match=0.7, max_depth=100, step_size=5)
evaluate3dObjectDetection(gt, pred, out, params, plot=False)
"""


def run_cityscapesscripts(gt_dir: Path, pred_dir: Path, work: Path) -> dict:
    """Box3dEvaluator with its command-line defaults, in a subprocess (it configures root logging
    and writes eval.log in its working directory on import); returns its results.json."""
    out = work / "official_results"
    out.mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _OFFICIAL,
            str(gt_dir),
            str(pred_dir),
            str(out),
            json.dumps(list(CITYSCAPES3D_EVAL_LABELS)),
        ],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def ds_case(tmp_path_factory, big_image):
    """The scenario converted by the Cityscapes converter, our optical-frame predictions of it,
    their exported files and cityscapesScripts' results on those files."""
    work = tmp_path_factory.mktemp("ds")
    docs, raw_preds = _scenario(np.random.default_rng(7))
    frames = _write_raw_root(work / "raw", docs, big_image)
    conv = CONVERTERS["cityscapes"](work / "raw")
    samples = [conv.convert(f) for f in conv.frames()]
    assert [s.id for s in samples] == frames
    task = create_task("det3d")
    class_of = {("train" if n == "tram_train" else n): i for i, n in enumerate(task.classes)}
    class_of["caravan"] = task.classes.index("other_vehicle")
    predictions = {}
    for sample, preds in zip(samples, raw_preds):
        T = np.array(sample.extra["sensor_T_ISO_8855"])
        boxes, rotation = cg.vehicle_boxes_to_optical(
            np.array([p["center"] for p in preds]).reshape(-1, 3),
            np.array([p["dims"] for p in preds]).reshape(-1, 3),
            np.array([p["quat"] for p in preds]).reshape(-1, 4),
            T,
        )
        predictions[sample.key] = Det3DPrediction(
            boxes,
            rotation,
            np.array([p["score"] for p in preds]),
            np.array([class_of[p["label"]] for p in preds]),
            amodal_boxes(boxes, rotation, sample.K, sample.size),
        )
    write_task_predictions(task, work / "preds", predictions, samples)
    official = run_cityscapesscripts(work / "raw/gtBbox3d/val", work / "preds/det3d", work)
    return task, samples, predictions, official, work


def _metric(task, samples, predictions) -> dict[str, float]:
    metric = task.metric()
    for sample in samples:
        metric.update(predictions.get(sample.key), task.ground_truth(sample))
    return metric.compute()


_OFFICIAL_NAMES = {
    "ds": "Detection_Score",
    "ds_ap": "AP",
    "ds_center_dist": "Center_Dist",
    "ds_size_similarity": "Size_Similarity",
    "ds_os_yaw": "OS_Yaw",
    "ds_os_pitch_roll": "OS_Pitch_Roll",
}


def _assert_equals_official(ours: dict[str, float], official: dict) -> None:
    for name, theirs in _OFFICIAL_NAMES.items():
        assert ours[name] == pytest.approx(official["m" + theirs], abs=1e-9), name
        for label in CITYSCAPES3D_EVAL_LABELS:
            value = official[theirs][label] if name == "ds" else official[theirs][label]["auc"]
            assert ours[f"{name}/{label}"] == pytest.approx(value, abs=1e-9), (name, label)


def test_detection_score_equals_cityscapesscripts_on_the_same_files(ds_case):
    task, samples, predictions, official, _ = ds_case
    # the scenario is not trivial: several classes score, TP similarities span depth bins
    assert 0.05 < official["mDetection_Score"] < 0.95
    assert sum(official["Detection_Score"][label] > 0 for label in CITYSCAPES3D_EVAL_LABELS) >= 4
    assert all(0 < official[f"m{n}"] < 1 for n in ("Center_Dist", "Size_Similarity", "OS_Yaw", "OS_Pitch_Roll"))
    assert len(official["Center_Dist"]["car"]["data"]) >= 3
    far = [
        np.hypot(
            *cg.optical_boxes_to_frame(s.det3d.boxes, s.det3d.rotation, np.array(s.extra["sensor_T_ISO_8855"]))[0][
                :, :2
            ].T
        )
        for s in samples
    ]
    assert sum(int((d >= 100).sum()) for d in far) >= 3  # beyond the TP similarities' range
    ours = _metric(task, samples, predictions)
    _assert_equals_official(ours, official)
    assert ours["ds_samples"] == len(samples)


def test_detection_score_from_the_read_back_files_is_the_same(ds_case):
    task, samples, _, official, work = ds_case
    read = task.read_predictions(work / "preds")
    assert sorted(read) == sorted(s.key for s in samples)
    assert {p.frame for p in read.values()} == {"vehicle"}
    _assert_equals_official(_metric(task, samples, read), official)


def _decoded_with_pitch_roll_errors(task, sample, rng: np.random.Generator, spread: float) -> Det3DPrediction:
    """The truth of ``sample`` as ``decode`` would give it from multi-bin outputs whose pitch and roll
    are off by up to ``spread`` rad: centre, size and observation angle exact; the three angles
    encoded (``multibin_targets``) and decoded (``decode_multibin``), R = R_y(yaw) R_z(pitch) R_x(roll)
    in the optical frame, as ``Det3DTask._decode_one`` builds it."""
    truth = task.ground_truth(sample)
    boxes = truth.boxes
    n, bins = len(boxes), task.config.heading_bins
    yaw, pitch, roll = geo.rotation_to_yaw_pitch_roll(truth.rotation)
    ray = np.arctan2(boxes[:, 0], boxes[:, 2])
    alpha = yaw - ray
    pitch, roll = pitch + rng.uniform(-spread, spread, n), roll + rng.uniform(-spread, spread, n)
    angles = torch.from_numpy(np.stack([alpha, pitch, roll], axis=1))  # (N, 3)
    outputs = multibin_targets(angles, bins).numpy()  # (N, 3 2 n)
    alpha_d, pitch_d, roll_d = decode_multibin(outputs, bins).T
    rotation = geo.yaw_pitch_roll_to_rotation(alpha_d + ray, pitch_d, roll_d).reshape(-1, 3, 3)
    boxes = np.column_stack([boxes[:, :6], np.arctan2(rotation[:, 0, 2], rotation[:, 0, 0])])
    scores = rng.choice(np.arange(0.0, 1.01, 0.02)[5:], n)  # on the evaluator's confidence grid
    return Det3DPrediction(boxes, rotation, scores, truth.classes, amodal_boxes(boxes, rotation, truth.K, truth.size))


def test_detection_score_with_predicted_pitch_and_roll_equals_cityscapesscripts(ds_case, tmp_path):
    """Predictions carrying their own pitch and roll (off by up to 0.3 rad, everything else exact)
    are exported and scored by cityscapesScripts: its OS_Pitch_Roll is below 1 and every part
    of our DS, from the decoded predictions and from the files read back, is equal to it; the
    same boxes with the truth's pitch and roll score OS_Pitch_Roll 1, so the predicted angles
    are what is scored."""
    task, samples, _, _, work = ds_case
    rng = np.random.default_rng(11)
    predictions = {s.key: _decoded_with_pitch_roll_errors(task, s, rng, 0.3) for s in samples}
    write_task_predictions(task, tmp_path / "preds", predictions, samples)
    official = run_cityscapesscripts(work / "raw/gtBbox3d/val", tmp_path / "preds/det3d", tmp_path)
    scored = [label for label in CITYSCAPES3D_EVAL_LABELS if official["Center_Dist"][label]["auc"] > 0]
    assert len(scored) >= 3  # classes whose TPs span depth bins (one bin scores 0, as the tool does)
    for label in scored:  # only pitch and roll are off
        assert official["Center_Dist"][label]["auc"] > 0.999 and official["OS_Yaw"][label]["auc"] > 0.999
        assert 0.98 < official["OS_Pitch_Roll"][label]["auc"] < 0.998
    _assert_equals_official(_metric(task, samples, predictions), official)
    _assert_equals_official(_metric(task, samples, task.read_predictions(tmp_path / "preds")), official)
    exact = {s.key: _decoded_with_pitch_roll_errors(task, s, np.random.default_rng(11), 0.0) for s in samples}
    ours = _metric(task, samples, exact)
    for label in scored:
        assert ours[f"ds_os_pitch_roll/{label}"] == pytest.approx(1.0, abs=1e-9)


def test_ignore_region_and_depth_rules_change_the_score(ds_case):
    task, samples, predictions, official, _ = ds_case
    without_ignore = [
        dataclasses.replace(s, det2d=dataclasses.replace(s.det2d, ignore=np.zeros((0, 4)))) for s in samples
    ]
    assert _metric(task, without_ignore, predictions)["ds_ap/car"] < official["AP"]["car"]["auc"] - 1e-6
    # TP similarities stop at ds_max_depth (100 m; the scenario has TPs beyond 60 m), AP does not
    nearer = _metric(create_task("det3d", ds_max_depth=60), samples, predictions)
    assert nearer["ds_center_dist"] != pytest.approx(official["mCenter_Dist"], abs=1e-6)
    assert nearer["ds_ap"] == pytest.approx(official["mAP"], abs=1e-12)


def test_metric_merges_to_the_single_pass_result(ds_case):
    task, samples, predictions, _, _ = ds_case
    parts = [task.metric(), task.metric()]
    for i, sample in enumerate(samples):
        parts[i % 2].update(predictions[sample.key], task.ground_truth(sample))
    parts[1].merge(parts[0])
    merged, single = parts[1].compute(), _metric(task, samples, predictions)
    assert merged.keys() == single.keys()
    for key, value in single.items():
        assert merged[key] == pytest.approx(value, abs=1e-12, nan_ok=True), key


# ---- BEV AP against a plain reference ---------------------------------------------------------


def _reference_bev_ap(items, classes, thresholds) -> dict[str, float]:
    """Global greedy matching by descending score, 101-point interpolated AP, loops only.

    ``items``: per sample (gt list of (class, x, y), prediction list of (class, x, y, score)).
    Equal scores are ranked false positives first (the metric's documented rule).
    """
    per_class = {}
    for c in classes:
        npos = sum(1 for gts, _ in items for g in gts if g[0] == c)
        if npos == 0:
            continue
        aps = []
        for thr in thresholds:
            dets = sorted(
                [(p[3], s, p) for s, (_, preds) in enumerate(items) for p in preds if p[0] == c], key=lambda d: -d[0]
            )
            used = set()
            flags = []
            for _, s, p in dets:
                best, best_d = None, math.inf
                for j, g in enumerate(items[s][0]):
                    if g[0] == c and (s, j) not in used:
                        d = math.hypot(g[1] - p[1], g[2] - p[2])
                        if d < best_d:
                            best, best_d = j, d
                hit = best is not None and best_d < thr
                if hit:
                    used.add((s, best))
                flags.append((-dets[len(flags)][0], hit))
            tp = fp = 0
            prec, rec = [], []
            for _, hit in sorted(flags):  # by score, misses first among equal scores
                tp, fp = tp + hit, fp + (not hit)
                prec.append(tp / (tp + fp))
                rec.append(tp / npos)
            total = 0.0
            for r in np.linspace(0.0, 1.0, 101):  # COCO's recall points
                total += max([p for p, q in zip(prec, rec) if q >= r], default=0.0)
            aps.append(total / 101)
        per_class[c] = sum(aps) / len(aps)
    return per_class


def test_bev_ap_equals_a_plain_reference_over_mixed_sources(ds_case, shards):
    task, samples, predictions, _, _ = ds_case
    rng = np.random.default_rng(11)
    pairs = [(s, predictions[s.key]) for s in samples]
    for key in KITTI_KEYS:  # KITTI: no amodal boxes, no extrinsic -> BEV of the optical x-z plane
        sample = shards.read_sample(key)
        gt = sample.det3d.boxes
        boxes = np.concatenate([gt, gt[:1] + [3, 0, 2, 0, 0, 0, 0]])  # every box and a false positive
        boxes[:, :3] += rng.normal(0, 0.6, (len(boxes), 3))
        pairs.append(
            (
                sample,
                Det3DPrediction(
                    boxes,
                    geo.yaw_to_rotation(boxes[:, 6]),
                    rng.uniform(0, 1, len(boxes)),
                    np.concatenate([sample.det3d.classes, [0]]),
                    np.zeros((len(boxes), 4)),
                ),
            )
        )
    items = []
    for sample, pred in pairs:
        T = sample.extra.get("sensor_T_ISO_8855")
        T = None if T is None else np.array(T)
        g_center, _, _ = cg.optical_boxes_to_frame(sample.det3d.boxes, sample.det3d.rotation, T)
        p_center, _, _ = cg.optical_boxes_to_frame(pred.boxes, pred.rotation, T)
        items.append(
            (
                [(int(c), *xy) for c, xy in zip(sample.det3d.classes, g_center[:, :2])],
                [(int(c), *xy, float(s)) for c, xy, s in zip(pred.classes, p_center[:, :2], pred.scores)],
            )
        )
        if T is None:  # the camera frame's ground plane is the optical x-z plane
            x, z = sample.det3d.boxes[:, 0], sample.det3d.boxes[:, 2]
            np.testing.assert_allclose(g_center[:, :2], np.column_stack([z, -x]))
    metric = task.metric()
    for sample, pred in pairs:
        metric.update(pred, task.ground_truth(sample))
    ours = metric.compute()
    reference = _reference_bev_ap(items, range(task.num_classes), task.config.bev_thresholds)
    assert len(reference) >= 5 and 0.05 < np.mean(list(reference.values())) < 0.95
    for c, value in reference.items():
        assert ours[f"bev_ap/{task.classes[c]}"] == pytest.approx(value, abs=1e-12), task.classes[c]
    assert ours["bev_ap"] == pytest.approx(np.mean(list(reference.values())), abs=1e-12)
    assert ours["ds_samples"] == len(samples) and ours["bev_samples"] == len(pairs)


def test_metric_without_cityscapes_samples_reports_nan_ds_and_a_bev_ap(task, shards):
    metric = task.metric()
    for key in KITTI_KEYS:
        sample = shards.read_sample(key)
        det = sample.det3d
        metric.update(
            Det3DPrediction(
                det.boxes,
                geo.yaw_to_rotation(det.boxes[:, 6]),
                np.ones(len(det.boxes)),
                det.classes,
                np.zeros((len(det.boxes), 4)),
            ),
            task.ground_truth(sample),
        )
    out = metric.compute()
    assert list(out)[:7] == list(task.metric_keys)
    assert math.isnan(out["ds"]) and out["bev_ap"] == 1.0


# ---- export -----------------------------------------------------------------------------------


def test_export_writes_the_cityscapes3d_format_and_reads_back(task, real_shards, shards, tmp_path):
    keys = [*KITTI_KEYS, CITY_KEY]
    batch = batch_from_shards(real_shards, keys, SIZE, letterbox=True)
    preds = task.decode(det3d_perfect_output(task, batch), batch)
    write_task_predictions(task, tmp_path, dict(zip(keys, preds)), [shards.read_sample(key) for key in keys])
    assert task.holds_predictions(tmp_path) and not task.holds_predictions(tmp_path / "nothing")
    city = json.loads((tmp_path / "det3d/cityscapes/val/lindau_000000_000019_pred.json").read_text())
    [obj] = city["objects"]
    real = REAL_BOXES["objects"][0]
    assert obj["label"] == "car" and obj["3d"]["format"] == "CRS_ISO8855"
    np.testing.assert_allclose(obj["3d"]["center"], real["3d"]["center"], atol=2e-4)
    np.testing.assert_allclose(obj["3d"]["dimensions"], real["3d"]["dimensions"], atol=1e-5)
    q = np.array(obj["3d"]["rotation"])
    np.testing.assert_allclose(q * np.sign(q[0] * real["3d"]["rotation"][0]), real["3d"]["rotation"], atol=1e-5)
    np.testing.assert_allclose(obj["2d"]["amodal"], real["2d"]["amodal"], atol=1.2)
    kitti = json.loads((tmp_path / "det3d/kitti/train/000001_pred.json").read_text())
    assert {o["3d"]["format"] for o in kitti["objects"]} == {"CRS_C"}
    read = task.read_predictions(tmp_path)
    assert sorted(read) == sorted(keys)
    for key, pred in zip(keys, preds):
        sample = shards.read_sample(key)
        T = sample.extra.get("sensor_T_ISO_8855")
        T = None if T is None else np.array(T)
        center, dims, rotation = cg.optical_boxes_to_frame(pred.boxes, pred.rotation, T)
        back = read[key]
        assert back.frame == ("camera" if T is None else "vehicle")
        np.testing.assert_allclose(back.boxes[:, :3], center, atol=1e-12)
        np.testing.assert_allclose(back.boxes[:, 3:6], dims, atol=1e-12)
        np.testing.assert_allclose(back.rotation, rotation, atol=1e-12)
        np.testing.assert_array_equal(back.scores, pred.scores)
        np.testing.assert_array_equal(back.classes, pred.classes)
        np.testing.assert_allclose(back.boxes2d, pred.boxes2d, atol=1e-9)
        # the metric sees the same thing either way
        truth = task.ground_truth(sample)
        a, b = task.metric(), task.metric()
        a.update(pred, truth)
        b.update(back, truth)
        for name, value in a.compute().items():
            assert b.compute()[name] == pytest.approx(value, abs=1e-12, nan_ok=True), name


def test_unified_tram_train_is_exported_as_cityscapes_train(task, shards, tmp_path):
    sample = shards.read_sample(CITY_KEY)
    det = sample.det3d
    tram = task.classes.index("tram_train")
    pred = Det3DPrediction(det.boxes, det.rotation, np.array([0.5]), np.array([tram]), np.zeros((1, 4)))
    task.writer(tmp_path).add(sample.key, pred, sample)
    doc = json.loads((tmp_path / "det3d/cityscapes/val/lindau_000000_000019_pred.json").read_text())
    assert doc["objects"][0]["label"] == "train"
    assert task.read_predictions(tmp_path)[sample.key].classes.tolist() == [tram]


_GOOD = {
    "2d": {"amodal": [1, 2, 3, 4]},
    "3d": {"center": [10, 0, 1], "dimensions": [4, 2, 1.5], "rotation": [1, 0, 0, 0]},
    "label": "car",
    "score": 0.5,
}


@pytest.mark.parametrize(
    "content, says",
    [
        ("{not json", "not a readable JSON"),
        (json.dumps({"boxes": []}), '{"objects"'),
        (json.dumps({"objects": [{**_GOOD, "score": "high"}]}), "objects[0].score"),
        (json.dumps({"objects": [_GOOD, {k: v for k, v in _GOOD.items() if k != "score"}]}), "objects[1].score"),
        (json.dumps({"objects": [{**_GOOD, "3d": {**_GOOD["3d"], "center": [1, 2]}}]}), "objects[0].3d.center"),
        (json.dumps({"objects": [{**_GOOD, "3d": {**_GOOD["3d"], "dimensions": [4, 0, 1]}}]}), "positive"),
        (json.dumps({"objects": [{**_GOOD, "3d": {**_GOOD["3d"], "format": "CRS_S"}}]}), "3d.format"),
        (json.dumps({"objects": [{**_GOOD, "2d": {}}]}), "objects[0]"),
    ],
    ids=[
        "not_json",
        "no_objects",
        "score_text",
        "score_missing",
        "short_center",
        "zero_size",
        "unknown_frame",
        "no_amodal",
    ],
)
def test_malformed_prediction_file_is_one_clear_error_naming_it(task, tmp_path, content, says):
    path = tmp_path / "det3d/cityscapes/val/lindau_000000_000019_pred.json"
    message = prediction_read_error(task, tmp_path, path, content)
    assert str(path) in message and says in message


def test_prediction_file_outside_the_layout_is_an_error(task, tmp_path):
    path = tmp_path / "det3d/lindau_000000_000019.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"objects": []}))
    with pytest.raises(MtlDataError, match="det3d/<source>/<split>/<id>_pred.json"):
        task.read_predictions(tmp_path)


def test_vehicle_frame_predictions_need_the_sample_extrinsic(task, shards, tmp_path):
    sample = shards.read_sample(CITY_KEY)
    det = sample.det3d
    pred = Det3DPrediction(det.boxes, det.rotation, np.array([0.9]), det.classes, sample.det2d.amodal)
    task.writer(tmp_path).add(sample.key, pred, sample)
    read = task.read_predictions(tmp_path)[sample.key]
    no_extrinsic = dataclasses.replace(sample, extra={})
    with pytest.raises(MtlDataError, match="sensor_T_ISO_8855"):
        task.metric().update(read, task.ground_truth(no_extrinsic))
    metric = task.metric()  # with it, the perfect prediction scores the best similarities
    metric.update(read, task.ground_truth(sample))
    out = metric.compute()
    assert out["ds_ap/car"] == 1.0 and out["bev_ap/car"] == 1.0


# ---- the loss against its formulas -------------------------------------------------------------

_LOSS_TERMS = ("heatmap", "offset", "depth", "size", "orientation", "pitch_roll")
_REGRESSION_TERMS = _LOSS_TERMS[1:]
_BINS = 12  # the default heading_bins
_REGRESSION_WIDTH = {"offset": 2, "depth": 1, "size": 3, "orientation": 2 * _BINS, "pitch_roll": 4 * _BINS}
_MULTIBIN_TERMS = ("orientation", "pitch_roll")


def _only(term: str):
    """The det3d task (default config) with every loss weight 0 except ``term``'s, which is 1."""
    return create_task("det3d", **{f"weight_{name}": float(name == term) for name in _LOSS_TERMS})


def _hand_batch() -> dict:
    """Three samples at 32x64 input (an 8x16 map at stride 4), every number chosen by hand.

    Sample 0, K = [[80, 0, 31.5], [0, 80, 15.5], [0, 0, 1]], upright (KITTI-like) boxes:
      A car (0.5, 0.75, 8): u = 36.5, v = 23.0 -> cell (row 5, col 9), offset (-0.25, 0.375);
      B car (1.5, 0.95, 9): u = 44.83, v = 23.94 -> cell (6, 11); its Gaussian overlaps A's;
      C pedestrian (-2, 0.7, 6): u = 4.83, v = 24.83 -> cell (6, 1);
      D a car behind the camera (z = -3): not trained; one padding row.
    Sample 1, K = [[70, 0, 30], [0, 75, 16], [0, 0, 1]] (fx != fy): a truck (-1, 1, 12) with a
      full rotation (yaw 0.7, pitch 0.05, roll -0.08, ``det3d_full``) -> cell (5, 6); a car
      projecting at u = 240, outside the 64-px image: not trained.
    Sample 2: box A again but ``K_known`` False: nothing is trained, the loss is 0.
    """
    b, m = 3, 5
    boxes = np.zeros((b, m, 7), np.float32)
    classes = np.full((b, m), -1, np.int64)
    rotation = np.zeros((b, m, 3, 3), np.float32)
    full = np.zeros((b, m), bool)
    K = np.zeros((b, 3, 3), np.float32)
    K[0] = [[80, 0, 31.5], [0, 80, 15.5], [0, 0, 1]]
    K[1] = [[70, 0, 30], [0, 75, 16], [0, 0, 1]]
    upright = [
        ([0.5, 0.75, 8.0, 4.0, 1.8, 1.5, 0.4], 0),
        ([1.5, 0.95, 9.0, 4.2, 1.9, 1.6, -1.0], 0),
        ([-2.0, 0.7, 6.0, 0.6, 0.6, 1.7, 2.5], 4),
        ([0.0, 0.0, -3.0, 4.0, 1.8, 1.5, 0.0], 0),
    ]
    for j, (box, cls) in enumerate(upright):
        boxes[0, j], classes[0, j], rotation[0, j] = box, cls, geo.yaw_to_rotation(box[6])
    tilted = geo.yaw_pitch_roll_to_rotation(0.7, 0.05, -0.08)
    boxes[1, 0] = [-1.0, 1.0, 12.0, 8.0, 2.5, 3.2, math.atan2(tilted[0, 2], tilted[0, 0])]
    classes[1, 0], rotation[1, 0], full[1, 0] = 2, tilted, True
    boxes[1, 1] = [30.0, 1.0, 10.0, 4.0, 1.8, 1.5, 0.0]
    classes[1, 1], rotation[1, 1], full[1, 1] = 0, geo.yaw_to_rotation(0.0), True
    boxes[2, 0], classes[2, 0], rotation[2, 0] = boxes[0, 0], 0, rotation[0, 0]
    return {
        "image": torch.zeros(b, 3, 32, 64),
        "K": torch.from_numpy(K),
        "K_known": torch.tensor([True, True, False]),
        "det3d_boxes": torch.from_numpy(boxes),
        "det3d_classes": torch.from_numpy(classes),
        "det3d_count": torch.tensor([4, 2, 1]),
        "det3d_rotation": torch.from_numpy(rotation),
        "det3d_full": torch.from_numpy(full),
    }


def _random_output(batch: dict, num_classes: int, seed: int = 0, stride: int = 4) -> dict[str, torch.Tensor]:
    """Raw head outputs: heatmap logits 1.5 N(0, 1) (sigmoid within CenterNet's 1e-4 clamp), N(0, 1) regressions."""
    gen = torch.Generator().manual_seed(seed)
    b, (h, w) = batch["image"].shape[0], (s // stride for s in batch["image"].shape[-2:])
    out = {"heatmap": 1.5 * torch.randn(b, num_classes, h, w, generator=gen)}
    out.update({name: torch.randn(b, k, h, w, generator=gen) for name, k in _REGRESSION_WIDTH.items()})
    return out


def _centernet_radius(height: float, width: float, min_overlap: float = 0.7) -> float:
    """``gaussian_radius`` of CenterNet's code (CornerNet's three cases, CenterNet's arithmetic)."""
    a1, b1, c1 = 1.0, height + width, width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(max(b1**2 - 4 * a1 * c1, 0.0))) / 2
    a2, b2, c2 = 4.0, 2 * (height + width), (1 - min_overlap) * width * height
    r2 = (b2 + math.sqrt(max(b2**2 - 4 * a2 * c2, 0.0))) / 2
    a3, b3, c3 = 4 * min_overlap, -2 * min_overlap * (height + width), (min_overlap - 1) * width * height
    r3 = (b3 + math.sqrt(max(b3**2 - 4 * a3 * c3, 0.0))) / 2
    return min(r1, r2, r3)


def _multibin_reference(outputs: np.ndarray, angles: list[float], bins: int) -> float:
    """Sum over the angles of MonoDLE's heading loss: cross-entropy of the n logits at the true
    class + |residual of that class - the target residual|; ``outputs`` is (A 2 n,)."""
    total = 0.0
    for a, angle in enumerate(angles):
        logits, residuals = outputs[2 * a * bins : (2 * a + 1) * bins], outputs[(2 * a + 1) * bins : (2 * a + 2) * bins]
        cls, res = monodle_angle2class(angle, bins)
        top = logits.max()
        total += top + math.log(np.exp(logits - top).sum()) - logits[cls] + abs(residuals[cls] - res)
    return total


def _reference_det3d_loss(
    batch: dict, output: dict[str, torch.Tensor], config, *, alpha: float = 2.0, beta: float = 4.0, overlay=np.maximum
) -> dict:
    """Each det3d loss term per sample, float64 numpy, box by box from the documented formulas.

    Nothing of ``det3d``'s target or loss code is used; ``config`` gives only stride,
    min_depth, min_radius, virtual_focal and heading_bins. Returns ``{term: (B,)}``, ``"heatmap_target"``
    (B, C, h, w) and ``"cells"`` (per sample, the trained boxes' (row, col)). ``alpha``,
    ``beta`` and ``overlay`` exist so a test can show that a wrong formula is caught.
    """
    s = config.stride
    logits = output["heatmap"].double().numpy()
    b, num_classes, fh, fw = logits.shape
    height, width = batch["image"].shape[-2:]
    terms = {name: np.zeros(b) for name in _LOSS_TERMS}
    targets = np.zeros(logits.shape)
    cells: list[list[tuple[int, int]]] = []
    for i in range(b):
        cells.append([])
        if not bool(batch["K_known"][i]):
            continue  # nothing projects: the sample's loss is 0
        K = batch["K"][i].double().numpy()
        regression = {name: [] for name in _REGRESSION_TERMS}  # per trained object: |pred - target| summed
        for j in range(int(batch["det3d_count"][i])):
            x, y, z, length, wid, hgt = batch["det3d_boxes"][i, j, :6].double().tolist()
            cls = int(batch["det3d_classes"][i, j])
            R = batch["det3d_rotation"][i, j].double().numpy()
            if not 0 <= cls < num_classes or z <= config.min_depth:
                continue
            u, v = (K @ [x, y, z])[:2] / z
            if not (-0.5 <= u < width - 0.5 and -0.5 <= v < height - 0.5):
                continue
            fu, fv = (u + 0.5) / s - 0.5, (v + 0.5) / s - 0.5  # pixel-centre cell coordinates
            col, row = math.floor(fu + 0.5), math.floor(fv + 0.5)
            assert min(abs(fu + 0.5 - round(fu + 0.5)), abs(fv + 0.5 - round(fv + 0.5))) > 1e-4  # no rounding tie
            cells[i].append((row, col))
            # CenterNet's Gaussian from the box's projected extent (corners clamped in front), cells
            half = np.array([length, hgt, wid]) / 2  # box axes: x length, y height (down), z width
            corners = np.array(
                [R @ (half * [sx, sy, sz]) + [x, y, z] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]
            )
            cuvw = corners @ K.T
            cz = np.maximum(cuvw[:, 2], config.min_depth)
            cu, cv = cuvw[:, 0] / cz, cuvw[:, 1] / cz
            box_w, box_h = min(max(np.ptp(cu) / s, 0.0), fw), min(max(np.ptp(cv) / s, 0.0), fh)
            radius_real = _centernet_radius(box_h, box_w)
            assert abs(radius_real - round(radius_real)) > 1e-4  # no rounding tie between float32 and float64
            radius = max(math.floor(radius_real), config.min_radius)
            sigma = (2 * radius + 1) / 6  # CenterNet: diameter / 6
            for r in range(max(row - radius, 0), min(row + radius + 1, fh)):
                for c in range(max(col - radius, 0), min(col + radius + 1, fw)):
                    g = math.exp(-((r - row) ** 2 + (c - col) ** 2) / (2 * sigma**2))
                    targets[i, cls, r, c] = overlay(targets[i, cls, r, c], g)
            # regression targets at the centre cell
            yaw, pitch, roll = (float(a) for a in geo.rotation_to_yaw_pitch_roll(R))
            alpha_obs = yaw - math.atan2(x, z)
            scale = config.virtual_focal / math.sqrt(K[0, 0] * K[1, 1]) if config.virtual_focal > 0 else 1.0
            wanted = {
                "offset": [fu - col, fv - row],
                "depth": [math.log(z * scale)],
                "size": [math.log(length), math.log(wid), math.log(hgt)],
                "orientation": [alpha_obs],
                "pitch_roll": [pitch, roll],
            }
            for name in _REGRESSION_TERMS:
                if name == "pitch_roll" and not bool(batch["det3d_full"][i, j]):
                    continue  # only rows with the source's own rotation
                pred = output[name][i, :, row, col].double().numpy()
                if name in _MULTIBIN_TERMS:
                    regression[name].append(_multibin_reference(pred, wanted[name], config.heading_bins))
                else:
                    regression[name].append(np.abs(pred - wanted[name]).sum())  # sum over the term's channels
        for name in _REGRESSION_TERMS:  # mean over the (full) trained objects; 0 without any
            terms[name][i] = np.mean(regression[name]) if regression[name] else 0.0
        # CenterNet eq. 1 (Zhou et al. 2019) on its clamped sigmoid, / max(1, objects)
        p = np.clip(1 / (1 + np.exp(-logits[i])), 1e-4, 1 - 1e-4)
        y_map = targets[i]
        pos = y_map == 1
        focal = np.where(pos, (1 - p) ** alpha * np.log(p), (1 - y_map) ** beta * p**alpha * np.log(1 - p))
        terms["heatmap"][i] = -focal.sum() / max(len(cells[i]), 1)
    return {**terms, "heatmap_target": targets, "cells": cells}


@pytest.fixture(scope="module")
def loss_batches(real_shards) -> dict[str, dict]:
    """The hand-built batch and a real one (two KITTI frames and the Cityscapes-3D box)."""
    return {
        "hand": _hand_batch(),
        "real": batch_from_shards(real_shards, [*KITTI_KEYS, CITY_KEY], SIZE, letterbox=True),
    }


def test_hand_built_case_is_what_its_docstring_says(task):
    batch = _hand_batch()
    ref = _reference_det3d_loss(batch, _random_output(batch, task.num_classes), task.config)
    assert ref["cells"] == [[(5, 9), (6, 11), (6, 1)], [(5, 6)], []]
    peaks = ref["heatmap_target"]
    # A and B (both cars) overlap: the overlaid cells hold the max, below 1 (A: r = 1, sigma = 0.5)
    np.testing.assert_allclose(peaks[0, 0, 5, 10], max(math.exp(-1 / 0.5), math.exp(-2 / 0.5)))
    assert peaks[0, 0, 5, 10] < 1 and peaks[0, 0, 6, 10] > 0
    assert (peaks[0] == 1).sum() == 3 and (peaks[1] == 1).sum() == 1 and not peaks[2].any()


@pytest.mark.parametrize("case", ["hand", "real"])
def test_focal_term_alone_equals_centernet_eq1(loss_batches, case):
    """The heatmap target is rebuilt INDEPENDENTLY here (projected centre, CenterNet's radius of the
    projected box extent, sigma = diameter / 6, max over overlapping boxes of a class) and the
    penalty-reduced focal loss (alpha 2, beta 4, / max(1, objects)) computed from it in numpy."""
    task = _only("heatmap")
    batch = loss_batches[case]
    output = _random_output(batch, task.num_classes, seed=1)
    ref = _reference_det3d_loss(batch, output, task.config)
    fh, fw = output["heatmap"].shape[-2:]
    np.testing.assert_allclose(
        task.targets(batch, (fh, fw)).heatmap.double().numpy(), ref["heatmap_target"], rtol=0, atol=1e-6
    )
    got = task.loss(output, batch).double().numpy()
    assert np.all(ref["heatmap"][batch["K_known"].numpy()] > 0)
    np.testing.assert_allclose(got, ref["heatmap"], rtol=1e-6, atol=1e-6)
    # near misses of the formula are far outside that tolerance
    for wrong in ({"beta": 2.0}, {"alpha": 1.0}, {"overlay": np.add}):
        other = _reference_det3d_loss(batch, output, task.config, **wrong)["heatmap"]
        assert np.abs(other - got).max() > 1e-3, wrong


@pytest.mark.parametrize("case", ["hand", "real"])
@pytest.mark.parametrize("term", _REGRESSION_TERMS)
def test_each_regression_term_alone_equals_its_formula(loss_batches, case, term):
    """Targets at the centre cells computed here (offset = projected centre - cell, log virtual
    depth, log l w h: |pred - target| summed over the term's channels; alpha = yaw - atan2(x, z),
    pitch and roll of ``geometry.rotation_to_yaw_pitch_roll``: MonoDLE's 12-bin heading loss,
    cross-entropy + residual L1, with its own ``angle2class``), averaged over the trained objects
    (pitch/roll: over the ``det3d_full`` ones)."""
    task = _only(term)
    batch = loss_batches[case]
    output = _random_output(batch, task.num_classes, seed=2)
    ref = _reference_det3d_loss(batch, output, task.config)
    got = task.loss(output, batch).double().numpy()
    np.testing.assert_allclose(got, ref[term], rtol=1e-6, atol=1e-6)
    # every sample with trained (full) objects takes part: hand 0 and 1, real 0-2; pitch/roll only the tilted box
    assert (ref[term] > 0).sum() == (1 if term == "pitch_roll" else {"hand": 2, "real": 3}[case])


def test_pitch_roll_term_is_zero_for_upright_rows_and_known_for_the_tilted_box(loss_batches):
    """KITTI rows (``det3d_full`` False) contribute nothing whatever the output; the Cityscapes box
    (one full object) costs 2 log(1 + (n - 1) e^-L) + 2 |d| when, for pitch and roll, its true bin
    (bin 0: both angles are small) has logit L, the others 0, and its residual is off by d."""
    task = _only("pitch_roll")
    batch = loss_batches["real"]
    assert not batch["det3d_full"][:2].any() and batch["det3d_full"][2, 0]
    wild = _random_output(batch, task.num_classes, seed=3)
    wild["pitch_roll"] = 100 * wild["pitch_roll"]
    loss = task.loss(wild, batch)
    assert loss[0] == 0 and loss[1] == 0 and loss[2] > 1
    K = batch["K"][2].double().numpy()
    x, y, z = batch["det3d_boxes"][2, 0, :3].double().tolist()
    u, v = (K @ [x, y, z])[:2] / z
    row, col = math.floor((v + 0.5) / 4), math.floor((u + 0.5) / 4)
    _, pitch, roll = geo.rotation_to_yaw_pitch_roll(batch["det3d_rotation"][2, 0].double().numpy())
    assert 0.01 < abs(float(pitch)) < 0.1  # the real box is tilted: bin 0, its angle as the residual
    n, big = _BINS, 3.0
    for shift in (0.0, -0.25):
        output = _random_output(batch, task.num_classes, seed=4)
        cell = torch.zeros(4 * n)
        cell[[0, 2 * n]] = big  # pitch's and roll's bin-0 logits
        cell[[n, 3 * n]] = torch.tensor([float(pitch), float(roll)]) + shift  # their bin-0 residuals
        output["pitch_roll"][2, :, row, col] = cell
        loss = task.loss(output, batch)
        assert loss[0] == 0 and loss[1] == 0
        expected = 2 * math.log(1 + (n - 1) * math.exp(-big)) + 2 * abs(shift)
        assert abs(float(loss[2]) - expected) < 1e-6
