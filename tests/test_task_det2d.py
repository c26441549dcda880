"""The det2d task (``train/tasks/det2d.py``): YOLO head and loss, decoding to stored pixels, the COCO
metric against pycocotools on the same files, and the COCO JSON export."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    assert_absent_task_gives_zero_loss_and_gradient,
    batch_from_shards,
    batch_of_samples,
    det2d_perfect_output,
    prediction_read_error,
    write_task_predictions,
)
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from mtl_data.errors import MtlDataError
from mtl_data.schema.sample import Det2D, Sample
from mtl_data.shards.reader import ShardSet
from mtl_data.train.data.targets import TargetConfig
from mtl_data.train.tasks import FeatureSpec, create_task
from mtl_data.train.tasks.det2d import (
    GROUND_TRUTH_FILE,
    PREDICTIONS_FILE,
    Det2DMetric,
    Det2DTask,
    Detections,
    coco_iou,
    to_xywh,
)

SIZE = (64, 128)
KITTI = ("kitti_train_000000", "kitti_train_000001")
CITY = "cityscapes_val_lindau_000000_000019"
NUM_CLASSES = 11


@pytest.fixture(scope="module")
def task() -> Det2DTask:
    return create_task("det2d")


@pytest.fixture(scope="module")
def shard_set(real_shards) -> ShardSet:
    return ShardSet.open(real_shards)


@pytest.fixture(scope="module")
def keys_of(shard_set) -> dict[str, list[str]]:
    """source -> its keys in the real shards."""
    out: dict[str, list[str]] = {}
    for key, source in shard_set.manifest.select("key", "source").iter_rows():
        out.setdefault(source, []).append(key)
    return {s: sorted(k) for s, k in out.items()}


@pytest.fixture(scope="module")
def stored(shard_set) -> dict[str, Sample]:
    """The stored samples with det2d labels: the two real KITTI frames and the Cityscapes frame."""
    return {key: shard_set.read_sample(key) for key in (*KITTI, CITY)}


def sample_of(key: str, size: tuple[int, int], boxes, classes, ignore=()) -> Sample:
    image = np.broadcast_to(np.uint8(0), (*size, 3))  # (h, w, 3) placeholder: only its shape is read
    det = Det2D(
        boxes=np.asarray(boxes, np.float64).reshape(-1, 4),
        classes=np.asarray(classes, np.int64),
        ignore=np.asarray(ignore, np.float64).reshape(-1, 4),
    )
    return Sample(key=key, source="test", split="val", id=key, image=image, orig_size=size, det2d=det)


def sort_rows(a: np.ndarray) -> np.ndarray:
    return a[np.lexsort(a.T[::-1])]


# ---- the head ----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(64, 128), (96, 96), (160, 64), (256, 512)])
def test_head_gives_the_s_by_s_grid_whatever_the_input_size(task, size):
    spec = FeatureSpec(channels=16)
    head = task.build_head(spec)
    feats = [torch.randn(2, 16, size[0] // s, size[1] // s) for s in spec.strides]
    out = head(feats, size)
    assert out.shape == (2, 8, 8, 10, 5 + NUM_CLASSES)
    # the objectness bias starts at logit(0.01)
    assert math.isclose(float(torch.sigmoid(head.predict.bias.detach().view(10, -1)[0, 4])), 0.01, rel_tol=1e-6)


def test_head_cell_sees_its_own_image_region(task):
    """A feature change confined to the right quarter of the stride-32 map changes only the grid
    cells within reach of the two 3x3 convolutions (one feature pixel = one cell here)."""
    spec = FeatureSpec(channels=8)
    head = task.build_head(spec).eval()
    feats = [torch.zeros(1, 8, 64 // s, 256 // s) for s in spec.strides]
    base = head(feats, (64, 256))
    feats[-1][..., 6:] = 5.0  # the stride-32 map is 2x8: columns 6-7 = image columns 192-255 = cells 6-7
    changed = (head(feats, (64, 256)) - base).abs().amax(dim=(0, 1, 3, 4)) > 0  # (S,) per grid column
    assert changed.tolist() == [False] * 4 + [True] * 4  # each 3x3 conv reaches one cell further


# ---- the loss ----------------------------------------------------------------------------------


def test_loss_equals_the_hand_computed_yolo_terms():
    task = create_task("det2d", grid=2, anchors=1, ignore_ioa=2.0)  # ignore regions off
    task = Det2DTask(task.config, classes=("a", "b"))
    size = (32, 32)
    sample = sample_of("s", size, [[3.5, 1.5, 11.5, 5.5]], [1])  # centre (7.5, 3.5) -> cell (0, 0), u = 0.5, v = 0.25
    batch = batch_of_samples([sample], size, grid=2, anchors=1, num_classes=2)
    assert batch["det2d_mask"][0].nonzero().tolist() == [[0, 0, 0]]
    raw = torch.zeros(1, 2, 2, 1, 7)
    raw[0, 0, 0, 0] = torch.tensor([0.0, 1.0, 0.6, 0.3, 2.0, 0.5, -0.5])
    raw[0, 1, 1, 0, 4] = -1.0
    x, y = 0.5, 0.25  # target offsets in the cell: u S - col, v S - row
    coord = (
        (0.5 - x) ** 2
        + (1 / (1 + math.exp(-1.0)) - y) ** 2
        + (0.6 - math.sqrt(8 / 32)) ** 2
        + (0.3 - math.sqrt(4 / 32)) ** 2
    )

    def bce(z, t):
        return math.log1p(math.exp(-z)) if t else math.log1p(math.exp(z))

    cls = -(-0.5 - math.log(math.exp(0.5) + math.exp(-0.5)))
    noobj = 2 * bce(0.0, 0) + bce(-1.0, 0)
    expected = 5.0 * coord + bce(2.0, 1) + cls + 0.5 * noobj  # one object: divided by 1
    got = task.loss(raw, batch)
    assert got.shape == (1,)
    assert math.isclose(float(got[0]), expected, rel_tol=1e-5)


def test_loss_is_finite_without_objects_and_zero_for_samples_without_the_task(task, real_shards, keys_of):
    empty = batch_of_samples([sample_of("e", SIZE, np.zeros((0, 4)), [])])
    shards = batch_from_shards(
        real_shards, [KITTI[1], keys_of["gtsrb"][0], keys_of["tusimple"][0]], SIZE, tasks=("det2d", "sign", "lane")
    )
    for batch in (empty, shards):
        out = torch.randn(len(batch["key"]), 8, 8, 10, 5 + NUM_CLASSES) * 3
        loss = task.loss(out, batch)
        assert torch.isfinite(loss).all()
        assert (loss[batch["present"]["det2d"]] > 0).all()
        assert (loss[~batch["present"]["det2d"]] == 0).all()
    # no object: the no-object term alone
    out = torch.zeros(1, 8, 8, 10, 5 + NUM_CLASSES)
    assert math.isclose(float(task.loss(out, empty)[0]), 0.5 * 640 * math.log(2), rel_tol=1e-6)


def test_task_absent_from_every_sample_gives_exactly_zero_loss_and_zero_head_gradient(task, real_shards, keys_of):
    batch = batch_from_shards(real_shards, [keys_of["gtsrb"][0], keys_of["tusimple"][0]], SIZE)
    assert_absent_task_gives_zero_loss_and_gradient(task, task.build_head(FeatureSpec(channels=16)), batch, channels=16)


def test_perfect_output_has_a_lower_loss_than_a_perturbed_one(task, real_shards):
    batch = batch_from_shards(real_shards, [*KITTI, CITY], SIZE)
    perfect = det2d_perfect_output(batch)
    obj = batch["det2d_mask"]
    worse = [perfect.clone() for _ in range(5)]
    worse[0][..., 0:2] += 0.5  # centres off
    worse[1][..., 2:4] *= 1.2  # sizes off
    worse[2][..., 4] = torch.where(obj, 1.0, -1.0)  # unsure objectness
    worse[3][..., 5:] -= 15 * batch["det2d"][..., 5:]  # the right class barely ahead
    worse[4] += torch.randn_like(perfect)
    worse = [task.loss(out, batch) for out in worse]
    best = task.loss(perfect, batch)
    assert (best < 1e-4).all()
    for loss in worse:
        assert (loss > best).all()


def test_no_object_penalty_is_dropped_only_inside_ignore_regions(task):
    # one ignore region over the top-left quarter of a 64x128 image; no objects
    sample = sample_of("i", SIZE, np.zeros((0, 4)), [], ignore=[[-0.5, -0.5, 63.5, 31.5]])
    batch = batch_of_samples([sample])
    base = torch.zeros(1, 8, 8, 10, 5 + NUM_CLASSES)
    base[..., 2:4] = 0.2  # predicted boxes 25.6 x 12.8 px centred in their cells
    inside, outside = base.clone(), base.clone()
    inside[0, 1, 1, 0, 4] = 3.0  # cell (1, 1): centre (23.5, 11.5), box inside the region
    outside[0, 6, 6, 0, 4] = 3.0  # cell (6, 6): bottom right, outside
    assert torch.equal(task.loss(inside, batch), task.loss(base, batch))
    assert task.loss(outside, batch) > task.loss(base, batch)
    no_ignore = create_task("det2d", ignore_ioa=2.0)
    assert no_ignore.loss(inside, batch) > no_ignore.loss(base, batch)


# ---- decoding --------------------------------------------------------------------------------------


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("letterbox", [True, False])
def test_perfect_output_decodes_to_the_stored_boxes(task, stored, flip, letterbox):
    samples = [stored[k] for k in (*KITTI, CITY)]
    batch = batch_of_samples([*samples, None], (128, 256), flip=flip, letterbox=letterbox)
    assert batch["flipped"][:3].tolist() == [flip] * 3
    assert int(batch["det2d_dropped"].sum()) == 0
    preds = task.decode(det2d_perfect_output(batch), batch)
    assert preds[3] is None  # the dummy slot
    for sample, pred in zip(samples, preds):
        assert isinstance(pred, Detections)
        assert pred.boxes.dtype == np.float64 and pred.classes.dtype == np.int64
        assert len(pred.boxes) == len(sample.det2d.boxes)
        got = sort_rows(np.column_stack([pred.boxes, pred.classes]))
        want = sort_rows(np.column_stack([sample.det2d.boxes, sample.det2d.classes]))
        np.testing.assert_allclose(got, want, atol=1e-3)
        assert (pred.scores > 0.99).all()


def test_decode_sorts_by_score_applies_class_wise_nms_and_clips_to_the_stored_image():
    task = create_task("det2d", max_detections=3)
    sample = sample_of("c", (40, 100), np.zeros((0, 4)), [])
    batch = batch_of_samples([sample], (64, 128))
    out = torch.full((1, 8, 8, 10, 5 + NUM_CLASSES), -30.0)
    out[..., 0:4] = 0.0
    out[0, 3, 3, 0, [2, 3, 4, 5]] = torch.tensor([0.5, 0.5, 3.0, 30.0])  # class 0, best
    out[0, 3, 3, 1, [2, 3, 4, 5]] = torch.tensor([0.5, 0.5, 2.0, 30.0])  # same box and class: suppressed
    out[0, 3, 3, 2, [2, 3, 4, 6]] = torch.tensor([0.5, 0.5, 1.0, 30.0])  # same box, class 1: kept
    out[0, 7, 7, 0, [2, 3, 4, 5]] = torch.tensor([2.0, 2.0, 0.5, 30.0])  # huge box: clipped
    out[0, 0, 0, 0, [2, 3, 4, 5]] = torch.tensor([0.1, 0.1, 0.0, 30.0])  # the 4th: beyond max_detections
    [pred] = task.decode(out, batch)
    assert pred.classes.tolist() == [0, 1, 0]
    assert np.all(np.diff(pred.scores) <= 0)
    np.testing.assert_allclose(pred.scores[:2], 1 / (1 + np.exp(-np.array([3.0, 1.0]))), rtol=1e-9)
    np.testing.assert_allclose(pred.boxes[2], [-0.5, -0.5, 99.5, 39.5])


# ---- the COCO metric against pycocotools -------------------------------------------------------------


def run_cocoeval(folder: Path) -> COCOeval:
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt = COCO(str(folder / GROUND_TRUTH_FILE))
        dt = gt.loadRes(str(folder / PREDICTIONS_FILE))
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def jitter(rng: np.random.Generator, box: np.ndarray, amount: float) -> np.ndarray:
    w, h = box[2] - box[0], box[3] - box[1]
    out = box + rng.normal(0, amount, 4) * np.array([w, h, w, h])
    return np.array([min(out[0], out[2]), min(out[1], out[3]), max(out[0], out[2]), max(out[1], out[3])])


def synthetic_scene(rng: np.random.Generator, stored: dict[str, Sample]) -> tuple[list[Sample], dict[str, Detections]]:
    """Samples (the real KITTI / Cityscapes frames plus generated ones) and imperfect detections:
    jittered boxes, misses, wrong classes, duplicates, false positives, boxes on ignore regions,
    an image without ground truth, one without detections, > 100 detections of one class on one
    image, degenerate boxes, and scores from a small set (ties within and across images)."""
    samples = list(stored.values())
    for n in range(6):
        h, w = int(rng.integers(60, 400)), int(rng.integers(80, 600))
        count = int(rng.integers(0 if n == 0 else 1, 9))
        xy = rng.uniform(0, [w * 0.8, h * 0.8], size=(count, 2))
        wh = rng.uniform(4, [w * 0.3, h * 0.4], size=(count, 2))
        boxes = np.column_stack([xy, np.minimum(xy + wh, [w - 1, h - 1])])
        classes = rng.integers(0, 5, size=count)
        ignore = [[0.0, 0.0, w * 0.2, h * 0.3]] if n % 2 else []
        samples.append(sample_of(f"synth_{n}", (h, w), boxes, classes, ignore))
    scores_set = np.array([0.05, 0.3, 0.5, 0.5, 0.7, 0.9, 0.95])
    preds = {}
    for i, sample in enumerate(samples):
        det = sample.det2d
        h, w = sample.size
        boxes, scores, classes = [], [], []
        if i == 1:  # an image with ground truth and no detection
            preds[sample.key] = Detections.empty()
            continue
        for box, cls in zip(det.boxes, det.classes):
            if rng.random() < 0.2:
                continue  # missed
            boxes.append(jitter(rng, box, rng.choice([0.01, 0.05, 0.15])))
            scores.append(rng.choice(scores_set))
            classes.append(cls if rng.random() < 0.85 else (cls + 1) % 5)
            if rng.random() < 0.3:  # a duplicate
                boxes.append(jitter(rng, box, 0.03))
                scores.append(rng.choice(scores_set))
                classes.append(cls)
        for region in det.ignore:  # detections on ignore regions
            boxes.append(jitter(rng, region, 0.05))
            scores.append(rng.choice(scores_set))
            classes.append(int(rng.integers(0, 5)))
        for _ in range(int(rng.integers(1, 5))):  # false positives, some degenerate
            x, y = rng.uniform(0, w - 10), rng.uniform(0, h - 10)
            bw = 0.0 if rng.random() < 0.2 else rng.uniform(2, 40)
            boxes.append(np.array([x, y, x + bw, y + rng.uniform(2, 40)]))
            scores.append(rng.choice(scores_set))
            classes.append(int(rng.integers(0, 5)))
        if i == 4:  # more than COCO's 100 per image and class
            for _ in range(110):
                boxes.append(jitter(rng, np.array([10.0, 10.0, 50.0, 40.0]), 0.2))
                scores.append(rng.uniform(0, 1))
                classes.append(2)
        preds[sample.key] = Detections(
            np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(scores, np.float64), np.asarray(classes, np.int64)
        )
    return samples, preds


def evaluate(task: Det2DTask, samples: list[Sample], preds: dict[str, Detections]) -> Det2DMetric:
    metric = task.metric()
    for sample in samples:
        metric.update(preds.get(sample.key), task.ground_truth(sample))
    return metric


@pytest.mark.parametrize("seed", range(4))
def test_coco_ap_equals_pycocotools_on_the_written_files(task, stored, tmp_path, seed):
    rng = np.random.default_rng(seed)
    samples, preds = synthetic_scene(rng, stored)
    folder = write_task_predictions(task, tmp_path / "pred", preds, samples)
    ev = run_cocoeval(folder)
    values = evaluate(task, samples, preds).compute()
    from_files = evaluate(task, samples, task.read_predictions(folder)).compute()
    assert 0.05 < ev.stats[1] < 0.95  # imperfect, not degenerate
    for key, stat in (("map", 0), ("map50", 1), ("map75", 2)):
        assert values[key] == pytest.approx(ev.stats[stat], abs=1e-12), key
        assert from_files[key] == pytest.approx(ev.stats[stat], abs=1e-12), key
    precision = ev.eval["precision"][0, :, :, 0, 2]  # (R, K) IoU 0.5, area all, maxDets 100
    for k, name in enumerate(task.classes):
        expected = np.mean(precision[:, k]) if (precision[:, k] > -1).all() else math.nan
        assert values[f"ap50/{name}"] == pytest.approx(expected, abs=1e-12, nan_ok=True), name
    labelled = {int(c) for s in samples for c in s.det2d.classes}
    assert [not math.isnan(values[f"ap50/{n}"]) for n in task.classes] == [k in labelled for k in range(NUM_CLASSES)]


def test_coco_matching_edge_cases_equal_pycocotools(task, tmp_path):
    """Hand-made cases where a near miss of COCOeval's matching rules changes the numbers."""
    image = sample_of(
        "edge",
        (100, 200),
        [
            [8, 10, 18, 20],
            [12, 10, 22, 20],  # two GT at equal IoU to d0
            [100, 10, 120, 30],  # d2 covers half of it: IoU 0.5 exactly
            [150, 50, 170, 70],
        ],  # exactly inside an ignore region
        [0, 0, 1, 2],
        ignore=[[150, 50, 170, 70]],
    )
    other = sample_of("edge2", (100, 200), [[10, 10, 30, 30]], [2])
    preds = {
        "edge": Detections(
            np.array(
                [
                    [10.0, 10, 20, 20],  # d0: IoU 8/12 with both GT: pycocotools takes the last one (B)
                    [13, 10, 23, 20],  # d1: IoU 9/11 with B, 1/3 with A: a FP once d0 took B
                    [100, 10, 110, 30],  # d2: matches at IoU >= 0.5 exactly
                    [150, 50, 170, 70],  # d3: IoU 1 with the regular GT and the crowd region: the regular GT first
                    [151, 50, 170, 70],  # d4: the GT is taken: matches the crowd region, ignored
                    [155, 55, 165, 65],  # d5: inside the region too (a region matches any number of detections)
                ]
            ),
            np.array([0.9, 0.8, 0.7, 0.6, 0.6, 0.5]),
            np.array([0, 0, 1, 2, 2, 0]),
        ),
        "edge2": Detections(np.array([[10.0, 10, 30, 30], [60, 60, 70, 70]]), np.array([0.6, 0.95]), np.array([2, 2])),
    }  # a tie in score with d3, d4 across images
    folder = write_task_predictions(task, tmp_path, preds, [image, other])
    ev = run_cocoeval(folder)
    values = evaluate(task, [image, other], preds).compute()
    for key, stat in (("map", 0), ("map50", 1), ("map75", 2)):
        assert values[key] == pytest.approx(ev.stats[stat], abs=1e-12), key
    assert values["ap50/car"] == pytest.approx(0.5, abs=0.01)  # d0 TP, d1 FP: recall 1/2 at precision 1
    assert values["ap50/van"] == pytest.approx(1.0)


def test_coco_iou_is_bit_identical_to_pycocotools():
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(3)
    dt = to_xywh(np.sort(rng.uniform(0, 300, size=(30, 2, 2)), axis=1).transpose(0, 2, 1).reshape(30, 4))
    gt = to_xywh(np.sort(rng.uniform(0, 300, size=(20, 2, 2)), axis=1).transpose(0, 2, 1).reshape(20, 4))
    crowd = rng.random(20) < 0.3
    np.testing.assert_array_equal(
        coco_iou(dt, gt, crowd), mask_utils.iou(dt.tolist(), gt.tolist(), crowd.astype(np.uint8).tolist())
    )


def test_ignore_regions_are_crowd_regions_for_every_class(task):
    # one GT car; one car detection on it; one pedestrian detection inside an ignore region
    sample = sample_of("a", (100, 200), [[10, 10, 50, 50]], [0], ignore=[[100, 10, 180, 90]])
    pred = Detections(np.array([[10.0, 10, 50, 50], [120, 20, 140, 60]]), np.array([0.9, 0.95]), np.array([0, 4]))
    values = evaluate(task, [sample], {"a": pred}).compute()
    assert values["map"] == pytest.approx(1.0)  # the pedestrian box is neither TP nor FP
    assert math.isnan(values["ap50/pedestrian"])  # a class with only crowd GT is left out
    outside = Detections(pred.boxes + [[0, 0, 0, 0], [-115, 40, -115, 40]], pred.scores, pred.classes)
    assert evaluate(task, [sample], {"a": outside}).compute()["map"] == pytest.approx(1.0)  # other class: no FP
    fp = Detections(outside.boxes, outside.scores, np.array([0, 0]))  # a car FP scored above the TP
    assert evaluate(task, [sample], {"a": fp}).compute()["map50"] == pytest.approx(0.5, abs=0.01)


def test_metric_merged_from_two_halves_equals_the_whole(task, stored):
    samples, preds = synthetic_scene(np.random.default_rng(7), stored)
    whole = evaluate(task, samples, preds).compute()
    first, second = evaluate(task, samples[::2], preds), evaluate(task, samples[1::2], preds)
    second.merge(first)
    merged = second.compute()
    assert merged.keys() == whole.keys()
    for key, value in whole.items():
        assert merged[key] == value or (math.isnan(value) and math.isnan(merged[key])), key
    with pytest.raises(ValueError, match="share"):
        second.merge(evaluate(task, samples[:1], preds))


def test_mean_best_iou_averages_each_gt_boxes_best_overlap_over_confident_detections(task):
    a = sample_of("a", (100, 100), [[0, 0, 10, 10], [50, 50, 60, 60]], [0, 1], ignore=[[80, 80, 99, 99]])
    b = sample_of("b", (100, 100), [[0, 0, 20, 10]], [2])
    preds = {
        "a": Detections(
            np.array([[0.0, 0, 10, 5], [0, 0, 10, 10], [50, 50, 60, 55]]),
            np.array([0.9, 0.4, 0.6]),
            np.array([3, 0, 1]),
        ),  # class ignored; 0.4 < 0.5
        "b": Detections(np.array([[0.0, 0, 10, 10], [80, 80, 99, 99]]), np.array([0.7, 0.99]), np.array([2, 2])),
    }
    values = evaluate(task, [a, b], preds).compute()
    assert values["mean_best_iou"] == pytest.approx((0.5 + 0.5 + 0.5) / 3)
    assert task.metric_keys[0] == "map50" and list(values)[:4] == list(task.metric_keys)


def test_metric_without_ground_truth_is_nan_and_refuses_unknown_classes(task):
    values = evaluate(task, [sample_of("a", (10, 10), np.zeros((0, 4)), [])], {}).compute()
    assert math.isnan(values["map50"]) and math.isnan(values["mean_best_iou"])
    metric = task.metric()
    with pytest.raises(ValueError, match="outside 0..10"):
        metric.update(
            Detections(np.zeros((1, 4)), np.ones(1), np.array([11])),
            task.ground_truth(sample_of("a", (10, 10), np.zeros((0, 4)), [])),
        )


# ---- export ------------------------------------------------------------------------------------------


def test_export_and_read_back_round_trip(task, stored, real_shards, keys_of, tmp_path):
    batch = batch_of_samples([stored[k] for k in (*KITTI, CITY)], (128, 256), letterbox=True)
    out = det2d_perfect_output(batch)
    out[..., 4] = torch.where(batch["det2d_mask"], 2.0, -3.5)  # many low-scored boxes too
    preds = dict(zip(batch["key"], task.decode(out, batch)))
    gtsrb = ShardSet.open(real_shards).read_sample(keys_of["gtsrb"][0])
    written = {**preds, gtsrb.key: Detections.empty()}  # gtsrb: no det2d labels, left out of both files
    write_task_predictions(task, tmp_path, written, [*(stored[key] for key in batch["key"]), gtsrb])
    assert task.holds_predictions(tmp_path) and not task.holds_predictions(tmp_path / "nothing")
    back = task.read_predictions(tmp_path)
    assert sorted(back) == sorted(k for k in preds if len(preds[k].boxes))
    for key, pred in back.items():
        np.testing.assert_allclose(pred.boxes, preds[key].boxes, rtol=0, atol=1e-9)
        np.testing.assert_array_equal(pred.scores, preds[key].scores)
        np.testing.assert_array_equal(pred.classes, preds[key].classes)
    truth = json.loads((tmp_path / GROUND_TRUTH_FILE).read_text())
    assert [img["id"] for img in truth["images"]] == sorted(KITTI + (CITY,))
    assert {(img["id"], img["width"], img["height"]) for img in truth["images"]} == {
        (k, stored[k].size[1], stored[k].size[0]) for k in stored
    }
    assert [c["id"] for c in truth["categories"]] == list(range(1, NUM_CLASSES + 1))
    assert [c["name"] for c in truth["categories"]] == list(task.classes)
    anns = truth["annotations"]
    assert [a["id"] for a in anns] == list(range(1, len(anns) + 1))
    crowd = [a for a in anns if a["iscrowd"]]
    assert len(crowd) == 4 * NUM_CLASSES  # KITTI 000001's four DontCare regions, once per category
    regular = [a for a in anns if not a["iscrowd"] and a["image_id"] == KITTI[1]]
    np.testing.assert_array_equal([a["bbox"] for a in regular], to_xywh(stored[KITTI[1]].det2d.boxes))
    assert [a["category_id"] for a in regular] == (stored[KITTI[1]].det2d.classes + 1).tolist()
    assert all(a["area"] == a["bbox"][2] * a["bbox"][3] for a in anns)


GOOD = {"image_id": "k", "category_id": 1, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.5}


@pytest.mark.parametrize(
    "text, says",
    [
        ("{not json", "not JSON"),
        (json.dumps({"annotations": []}), "got a JSON dict"),
        (json.dumps([GOOD, {k: v for k, v in GOOD.items() if k != "score"}]), "entry 1: missing field(s) score"),
        (json.dumps([{**GOOD, "bbox": "1 2 3 4"}]), "entry 0: bbox must be"),
        (json.dumps([{**GOOD, "bbox": [1, 2, 3]}]), "entry 0: bbox must be"),
        (json.dumps([GOOD, GOOD, {**GOOD, "bbox": [1, 2, -3, 4]}]), "entry 2: bbox width and height must be >= 0"),
        (json.dumps([{**GOOD, "category_id": 0}]), "entry 0: unknown category_id 0 (known: 1..11)"),
        (json.dumps([{**GOOD, "category_id": 12}]), "entry 0: unknown category_id 12"),
        (json.dumps([{**GOOD, "category_id": "car"}]), "entry 0: category_id must be an integer"),
        (json.dumps([{**GOOD, "category_id": True}]), "entry 0: category_id must be an integer"),
        (json.dumps([{**GOOD, "image_id": 3}]), "entry 0: image_id must be a sample key"),
        ('[{"image_id": "k", "category_id": 1, "bbox": [1, 2, 3, 4], "score": NaN}]', "entry 0: score must be"),
        (json.dumps([[1, 2]]), "entry 0: expected an object"),
    ],
)
def test_malformed_results_file_is_one_clear_error(task, tmp_path, text, says):
    path = tmp_path / PREDICTIONS_FILE
    message = prediction_read_error(task, tmp_path, path, text)
    assert str(path) in message and says in message


def test_missing_results_file_is_a_clear_error(task, tmp_path):
    with pytest.raises(MtlDataError, match=PREDICTIONS_FILE):
        task.read_predictions(tmp_path)


def test_config_is_checked_and_matches_the_loader_defaults():
    config = create_task("det2d").config
    target = TargetConfig()
    assert (config.grid, config.anchors) == (target.grid, target.anchors)
    assert dataclasses.asdict(config)["max_detections"] == 100
    with pytest.raises(MtlDataError, match="nms_iou"):
        create_task("det2d", nms_iou=1.5)
    with pytest.raises(MtlDataError, match="unknown option"):
        create_task("det2d", gird=8)
