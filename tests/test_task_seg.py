"""The seg task: loss under partial labels, decoding to stored pixels, the Cityscapes metric, export.

The metric is checked against cityscapesScripts' own evaluation (``evaluateImgLists`` on label-id
PNGs) with imperfect predictions, on synthetic maps and on the real Cityscapes fixture.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
from conftest import (
    assert_absent_task_gives_zero_loss_and_gradient,
    batch_from_shards,
    batch_of_samples,
    fixture_path,
    prediction_read_error,
    random_features,
    write_task_predictions,
)

from mtl_data.schema.sample import IGNORE_INDEX
from mtl_data.schema.taxonomy import SEG_CLASSES
from mtl_data.shards.reader import ShardSet
from mtl_data.train.tasks import FeatureSpec, create_task
from mtl_data.train.tasks._dense import to_stored
from mtl_data.train.tasks.base import view_of
from mtl_data.train.tasks.seg import SegMetric

A2D2 = "a2d2_train_20180807145028_frontcenter_000006882"
CITY = "cityscapes_val_frankfurt_000000_000294"
CITY_BOXES = "cityscapes_val_lindau_000000_000019"  # det2d / det3d only
KITTI = ("kitti_train_000000", "kitti_train_000001")
GTSRB = "gtsrb_train_00000_00000_00000"
TUSIMPLE = "tusimple_train_clips_0601_1494453497604532231_20"
SIZE = (64, 128)
C = len(SEG_CLASSES)
SPEC = FeatureSpec(channels=8)


def tiny_seg():
    torch.manual_seed(0)
    task = create_task("seg", hidden=8)
    return task, task.build_head(SPEC)


# ---- the metric against cityscapesScripts ----------------------------------------------------


@pytest.fixture
def cityscapes_eval(monkeypatch):
    """cityscapesScripts' pixel-level evaluation module, quiet, writing nothing, class IoU only."""
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as ev

    for name, value in {
        "quiet": True,
        "JSONOutput": False,
        "evalInstLevelScore": False,
        "evalPixelAccuracy": False,
    }.items():
        monkeypatch.setattr(ev.args, name, value)
    return ev


def train_to_label_ids(train_ids: np.ndarray) -> np.ndarray:
    """Cityscapes train ids (255 = void) -> label ids, with cityscapesScripts' own table."""
    from cityscapesscripts.helpers.labels import trainId2label

    lut = np.zeros(256, np.uint8)  # anything unknown -> 0 'unlabeled' (void)
    for train_id, label in trainId2label.items():
        if 0 <= train_id <= 255:
            lut[train_id] = label.id
    return lut[train_ids]


def label_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Cityscapes label ids -> train ids, 255 for every label ignored in evaluation."""
    from cityscapesscripts.helpers.labels import id2label

    lut = np.full(256, IGNORE_INDEX, np.uint8)
    for label_id, label in id2label.items():
        if label_id >= 0 and not label.ignoreInEval:
            lut[label_id] = label.trainId
    return lut[label_ids]


def official_scores(ev, tmp_path, pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[dict, float, float]:
    """(class IoU by name, mIoU, pixel accuracy) of cityscapesScripts on (prediction, truth) label-id maps.

    Pixel accuracy is read off the tool's confusion matrix (diagonal / rows of the evaluated
    labels): its own ``evalPixelAccuracy`` counts the ignored and the wrong pixels instead.
    """
    from cityscapesscripts.helpers.labels import id2label

    preds, gts = [], []
    for i, (pred, gt) in enumerate(pairs):
        preds.append(str(tmp_path / f"pred_{i}.png"))
        gts.append(str(tmp_path / f"gt_{i}_gtFine_labelIds.png"))
        assert cv2.imwrite(preds[-1], pred) and cv2.imwrite(gts[-1], gt)
    result = ev.evaluateImgLists(preds, gts, ev.args)
    confusion = np.array(result["confMatrix"], dtype=np.int64)
    evaluated = [i for i in range(confusion.shape[0]) if not id2label[i].ignoreInEval]
    accuracy = confusion[evaluated, evaluated].sum() / confusion[evaluated].sum()
    return result["classScores"], result["averageScoreClasses"], float(accuracy)


def assert_matches_official(metric: SegMetric, scores: dict, miou: float, accuracy: float) -> None:
    values = metric.compute()
    for name in SEG_CLASSES:
        ours, theirs = values[f"iou/{name}"], scores[name]
        assert math.isnan(ours) == math.isnan(theirs), name
        if not math.isnan(theirs):
            assert ours == pytest.approx(theirs, rel=1e-12, abs=0), name
    assert values["miou"] == pytest.approx(miou, rel=1e-12, abs=0)
    assert values["pixel_acc"] == pytest.approx(accuracy, rel=1e-12, abs=0)


def corrupt(truth: np.ndarray, rng: np.random.Generator, never: tuple[int, ...], extra: int) -> np.ndarray:
    """An imperfect prediction of ``truth`` (train ids): 20% random noise, some pixels of class
    ``extra`` (absent from the truth), some void predictions (255), random classes where the
    truth is void; the classes ``never`` are never predicted (they become road)."""
    pred = truth.copy()
    noise = rng.random(truth.shape) < 0.2
    pred[noise] = rng.integers(0, C, size=noise.sum())
    pred[rng.random(truth.shape) < 0.03] = extra
    pred[rng.random(truth.shape) < 0.02] = IGNORE_INDEX
    void = truth == IGNORE_INDEX
    pred[void] = rng.integers(0, C, size=void.sum())
    pred[np.isin(pred, never)] = 0
    return pred.astype(np.uint8)


def test_miou_and_pixel_accuracy_match_cityscapes_scripts_on_synthetic_imperfect_predictions(cityscapes_eval, tmp_path):
    rng = np.random.default_rng(0)
    metric, pairs = SegMetric(SEG_CLASSES), []
    for _ in range(3):
        # Ground truth in Cityscapes label ids 0..33 (void labels included), blocky like real maps.
        blocks = rng.integers(0, 34, size=(6, 8)).astype(np.uint8)
        label_gt = cv2.resize(blocks, (96, 48), interpolation=cv2.INTER_NEAREST)  # (48, 96)
        label_gt[label_gt == 31] = 26  # no 'train' (train id 16) anywhere in the truth
        label_gt[label_gt == 12] = 11  # nor 'wall' (train id 3)
        gt = label_to_train_ids(label_gt)
        # car never predicted; train predicted, never true; wall neither predicted nor true
        pred = corrupt(gt, rng, never=(13, 3), extra=16)
        metric.update(pred, gt)
        pairs.append((train_to_label_ids(pred), label_gt))
    values = metric.compute()
    # The imperfections are really there, so the comparison covers them.
    assert values["iou/car"] == 0.0 and values["iou/train"] == 0.0 and math.isnan(values["iou/wall"])
    assert (metric.counts[:, -1] > 0).any()  # void predictions counted as misses
    assert 0.0 < values["miou"] < 1.0
    assert_matches_official(metric, *official_scores(cityscapes_eval, tmp_path, pairs))


def test_miou_matches_cityscapes_scripts_on_the_real_cityscapes_label(cityscapes_eval, real_shards, tmp_path):
    label_gt = cv2.imread(
        str(next(fixture_path("cityscapes", "mmseg_pseudo", "gtFine", "val", "frankfurt").glob("*_labelIds.png"))),
        cv2.IMREAD_UNCHANGED,
    )
    truth = create_task("seg").ground_truth(ShardSet.open(real_shards).read_sample(CITY))
    # The shards hold exactly what the official tool evaluates.
    np.testing.assert_array_equal(truth, label_to_train_ids(label_gt))
    present = sorted(set(np.unique(truth).tolist()) - {IGNORE_INDEX})
    assert 3 not in present  # no 'wall' in this frame
    pred = corrupt(truth, np.random.default_rng(1), never=(present[-1], 3), extra=16)
    metric = SegMetric(SEG_CLASSES)
    metric.update(pred, truth)
    values = metric.compute()
    assert values[f"iou/{SEG_CLASSES[present[-1]]}"] == 0.0 and values["iou/train"] == 0.0
    # A class neither in the truth nor predicted is left out of the mean.
    assert math.isnan(values["iou/wall"])
    assert_matches_official(metric, *official_scores(cityscapes_eval, tmp_path, [(train_to_label_ids(pred), label_gt)]))


def test_seg_metric_ignores_predictions_on_void_truth_and_counts_void_predictions_as_misses():
    truth = np.array([[0, 0, 255, 255]], np.uint8)
    metric = SegMetric(("a", "b"))
    metric.update(np.array([[0, 255, 1, 1]], np.uint8), truth)
    values = metric.compute()
    assert values["iou/a"] == 0.5  # 1 TP, 1 FN (predicted void), no FP from the void truth
    assert math.isnan(values["iou/b"])  # predicted only where the truth is void: left out
    assert values["miou"] == 0.5 and values["pixel_acc"] == 0.5


def test_seg_metrics_merged_from_halves_equal_one_metric_on_everything():
    rng = np.random.default_rng(2)
    truths = [rng.integers(0, C, size=(20, 30)).astype(np.uint8) for _ in range(4)]
    for t in truths:
        t[rng.random(t.shape) < 0.1] = IGNORE_INDEX
    preds = [corrupt(t, rng, never=(3,), extra=16) for t in truths]
    whole, first, second = SegMetric(SEG_CLASSES), SegMetric(SEG_CLASSES), SegMetric(SEG_CLASSES)
    for i, (p, t) in enumerate(zip(preds, truths)):
        whole.update(p, t)
        (first if i % 2 else second).update(p, t)
    first.merge(second)
    np.testing.assert_array_equal(first.counts, whole.counts)
    a, b = first.compute(), whole.compute()
    assert a.keys() == b.keys()
    assert all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)


def test_seg_metric_refuses_a_prediction_of_another_size():
    with pytest.raises(ValueError, match="prediction is"):
        SegMetric(SEG_CLASSES).update(np.zeros((4, 5), np.uint8), np.zeros((4, 6), np.uint8))


def test_seg_metric_of_nothing_is_nan():
    values = SegMetric(SEG_CLASSES).compute()
    assert math.isnan(values["miou"]) and math.isnan(values["pixel_acc"])


# ---- loss and partial labels -----------------------------------------------------------------


def test_absent_seg_gives_zero_loss_and_zero_gradient_into_the_head(real_shards):
    batch = batch_from_shards(real_shards, [KITTI[0], GTSRB, TUSIMPLE, CITY_BOXES], SIZE)
    task, head = tiny_seg()
    features = assert_absent_task_gives_zero_loss_and_gradient(task, head, batch)
    assert torch.count_nonzero(features[0].grad) == 0  # the stride-4 map the head reads


def test_seg_loss_is_finite_on_samples_without_seg_and_trains_the_labelled_one(real_shards):
    batch = batch_from_shards(real_shards, [A2D2, KITTI[0], GTSRB, TUSIMPLE], SIZE)
    assert batch["present"]["seg"].tolist() == [True, False, False, False]
    task, head = tiny_seg()
    per_sample = task.loss(head(random_features(batch), SIZE), batch)
    assert per_sample.shape == (4,) and torch.isfinite(per_sample).all()
    loss = task.batch_loss(head(random_features(batch), SIZE), batch)
    assert loss.item() > 0
    loss.backward()
    assert torch.count_nonzero(head.out.weight.grad) > 0  # the same check as above can fail


def test_an_all_ignored_seg_crop_gives_zero_loss_and_no_nan(real_shards):
    batch = batch_from_shards(real_shards, [CITY, A2D2], SIZE)
    batch["seg"][0] = IGNORE_INDEX  # e.g. a crop of letterbox padding and void only
    task, head = tiny_seg()
    features = random_features(batch)
    per_sample = task.loss(head(features, SIZE), batch)
    assert per_sample[0].item() == 0.0 and per_sample[1].item() > 0
    batch["seg"][1] = IGNORE_INDEX
    loss = task.batch_loss(head(features, SIZE), batch)
    assert loss.item() == 0.0
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in head.parameters())


def test_seg_loss_is_the_mean_cross_entropy_over_labelled_pixels():
    task = create_task("seg", classes=("a", "b", "c"))
    logits = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    target = torch.randint(0, 3, (2, 4, 5), generator=torch.Generator().manual_seed(1))
    target[0, :2] = IGNORE_INDEX
    per_sample = task.loss(logits, {"seg": target})
    log_p = torch.log_softmax(logits, dim=1).numpy()
    for b in range(2):
        t = target[b].numpy()
        rows, cols = np.nonzero(t != IGNORE_INDEX)
        expected = -log_p[b, t[rows, cols], rows, cols].mean()
        assert per_sample[b].item() == pytest.approx(expected, rel=1e-5)


def test_seg_head_gives_logits_at_the_input_size():
    _, head = tiny_seg()
    features = [torch.randn(2, SPEC.channels, 64 // s, 96 // s) for s in SPEC.strides]
    assert head(features, (64, 96)).shape == (2, C, 64, 96)


# ---- decoding to stored pixels ---------------------------------------------------------------


def perfect_logits(batch: dict) -> torch.Tensor:
    """Logits that predict the batch's own target: one-hot x 10, zeros where ignored."""
    target = batch["seg"]  # (B, H, W)
    valid = target != IGNORE_INDEX
    logits = torch.zeros(target.shape[0], C, *target.shape[1:])  # (B, C, H, W)
    logits.scatter_(1, torch.where(valid, target, 0)[:, None], 10.0)
    return logits * valid[:, None]


def interior(label: np.ndarray, ry: int, rx: int) -> np.ndarray:
    """Pixels whose (2 ry + 1) x (2 rx + 1) neighbourhood holds a single value (away from borders)."""
    kernel = np.ones((2 * ry + 1, 2 * rx + 1), np.uint8)
    return cv2.erode(label, kernel, borderType=cv2.BORDER_REPLICATE) == cv2.dilate(
        label, kernel, borderType=cv2.BORDER_REPLICATE
    )


@pytest.mark.parametrize(
    ("image_size", "letterbox", "flip"),
    [((64, 128), False, False), ((64, 128), False, True), ((64, 96), True, False), ((64, 96), True, True)],
)
def test_decoding_perfect_logits_gives_back_the_stored_label(real_shards, image_size, letterbox, flip):
    """Away from class borders the decoded map is the stored label exactly.

    Stored pixel c is read from the output pixels around ``(c + 0.5) s - 0.5``; each of those
    took its label from the stored pixel nearest its own centre, at most ``1/s + 0.5`` stored
    pixels from c. Where the label is constant within ``ceil(1/s) + 1`` pixels, every logit
    blended is the same one-hot, so the argmax is that label; at borders the resolution lost in
    the downscale cannot come back.
    """
    batch = batch_from_shards(real_shards, [A2D2, CITY], image_size, letterbox, flip=flip)
    assert batch["flipped"].tolist() == [flip, flip]
    if letterbox:
        assert (batch["offset"] > 0).any(dim=1).all()  # both really padded
    task = create_task("seg")
    decoded = task.decode(perfect_logits(batch), batch)
    shards = ShardSet.open(real_shards)
    for i, key in enumerate([A2D2, CITY]):
        stored = task.ground_truth(shards.read_sample(key))
        assert decoded[i].shape == stored.shape and decoded[i].dtype == np.uint8
        sy, sx = batch["scale"][i].tolist()
        inside = interior(stored, math.ceil(1 / sy) + 1, math.ceil(1 / sx) + 1) & (stored != IGNORE_INDEX)
        assert inside.mean() > 0.3
        np.testing.assert_array_equal(decoded[i][inside], stored[inside])
        labelled = stored != IGNORE_INDEX
        assert (decoded[i][labelled] == stored[labelled]).mean() > 0.85  # borders too, mostly


@pytest.mark.parametrize("flip", [False, True])
def test_decoding_an_enlarged_batch_gives_back_the_stored_label_at_every_labelled_pixel(real_shards, flip):
    """At twice the stored size, decoding shrinks by 2: a stored pixel's own 2 x 2 output block
    holds its label and carries more than half of the filter's weight (0.75 x 0.75 for the
    anti-aliased bilinear filter), so the argmax is its own label everywhere, borders included."""
    batch = batch_from_shards(real_shards, [CITY], (256, 512), flip=flip)
    decoded = create_task("seg").decode(perfect_logits(batch), batch)[0]
    stored = create_task("seg").ground_truth(ShardSet.open(real_shards).read_sample(CITY))
    labelled = stored != IGNORE_INDEX
    np.testing.assert_array_equal(decoded[labelled], stored[labelled])


def test_decoding_without_undoing_the_flip_would_fail(real_shards):
    """The round trip above can fail: a decode that ignores the mirror misplaces the label."""
    batch = batch_from_shards(real_shards, [CITY], (64, 128), flip=True)
    logits = perfect_logits(batch)
    wrong = to_stored(logits[0], view_of(dict(batch, flipped=torch.tensor([False])), 0)).argmax(0).numpy()
    stored = create_task("seg").ground_truth(ShardSet.open(real_shards).read_sample(CITY))
    labelled = stored != IGNORE_INDEX
    assert (wrong[labelled] == stored[labelled]).mean() < 0.8


def test_decode_leaves_dummy_slots_empty(real_shards):
    batch = batch_of_samples([ShardSet.open(real_shards).read_sample(CITY), None], SIZE, tasks=("seg",))
    decoded = create_task("seg").decode(torch.zeros(2, C, *SIZE), batch)
    assert decoded[1] is None and decoded[0].shape == (128, 256)


# ---- export ----------------------------------------------------------------------------------


def test_seg_predictions_round_trip_through_png_files(real_shards, tmp_path):
    task = create_task("seg")
    shards = ShardSet.open(real_shards)
    rng = np.random.default_rng(3)
    samples = [shards.read_sample(key) for key in (CITY, KITTI[1])]
    written = {s.key: rng.integers(0, C, size=s.size).astype(np.uint8) for s in samples}
    write_task_predictions(task, tmp_path, written, samples)
    assert task.holds_predictions(tmp_path) and not task.holds_predictions(tmp_path / "nothing")
    back = task.read_predictions(tmp_path)
    assert back.keys() == written.keys()
    for key, prediction in written.items():
        assert back[key].dtype == np.uint8
        np.testing.assert_array_equal(back[key], prediction)
    assert not list(tmp_path.rglob("*.part"))


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"not a png at all", "not a PNG"),
        (cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))[1].tobytes(), "found a 8-bit RGB PNG"),
        (cv2.imencode(".png", np.zeros((4, 4), np.uint16))[1].tobytes(), "found a 16-bit grey PNG"),
        (cv2.imencode(".png", np.arange(64, dtype=np.uint8).reshape(8, 8))[1].tobytes()[:-30], "does not decode"),
    ],
)
def test_reading_a_malformed_seg_png_names_the_file(tmp_path, content, says):
    path = tmp_path / "seg" / "some_key.png"
    message = prediction_read_error(create_task("seg"), tmp_path, path, content)
    assert str(path) in message and says in message and "8-bit" in message
    assert "\n" not in message
