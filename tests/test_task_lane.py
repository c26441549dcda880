"""The lane task: TuSimple metric (against a second, independent implementation of the official
rules), partial-label loss, decoding round trips on the real TuSimple frame, lane.json export."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import (
    assert_absent_task_gives_zero_loss_and_gradient,
    batch_from_shards,
    fixture_path,
    prediction_read_error,
    random_features,
)

from mtl_data.errors import MtlDataError
from mtl_data.schema.lanes import NO_POINT, rasterize_lanes
from mtl_data.shards.reader import ShardSet
from mtl_data.train.tasks import FeatureSpec, create_task
from mtl_data.train.tasks.lane import LaneConfig, LaneMetric, LanePrediction, LaneTruth, read_lane_json, tusimple_bench

KEY = "tusimple_train_clips_0601_1494453497604532231_20"
SIZE = (128, 256)


# ---- the official rules, written again the plain way ------------------------------------------


def reference_bench(pred, gt, y_samples, running_time=0.0):
    """TuSimple's ``LaneEval.bench`` (evaluate/lane.py, tusimple-benchmark commit 365c4cd), step by
    step with loops: returns (accuracy, fp, fn) of one image."""
    y = np.asarray(y_samples, dtype=float)
    if any(len(p) != len(y) for p in pred):
        raise ValueError("Format of lanes error.")
    if running_time > 200 or len(gt) + 2 < len(pred):
        return 0.0, 0.0, 1.0
    line_accs, matched, fn = [], 0, 0
    for x_gts in gt:
        x_gts = np.asarray(x_gts, dtype=float)
        ok = x_gts >= 0
        angle = math.atan(np.polyfit(y[ok], x_gts[ok], 1)[0]) if ok.sum() > 1 else 0.0
        thresh = 20.0 / math.cos(angle)
        best = 0.0
        for x_preds in pred:
            hits = 0
            for xp, xg in zip(x_preds, x_gts):
                xp = xp if xp >= 0 else -100.0
                xg = xg if xg >= 0 else -100.0
                hits += abs(xp - xg) < thresh
            best = max(best, hits / len(x_gts))
        if best < 0.85:
            fn += 1
        else:
            matched += 1
        line_accs.append(best)
    fp = len(pred) - matched
    if len(gt) > 4 and fn > 0:
        fn -= 1
    s = sum(line_accs)
    if len(gt) > 4:
        s -= min(line_accs)
    return s / max(min(4.0, len(gt)), 1.0), (fp / len(pred) if len(pred) > 0 else 0.0), fn / max(min(len(gt), 4.0), 1.0)


def reference_submit(preds: dict, gts: dict):
    """``bench_one_submit``: every image's values summed and divided by the number of GT images."""
    total = np.zeros(3)
    for raw_file, (lanes, run_time) in preds.items():
        total += reference_bench(lanes, gts[raw_file]["lanes"], gts[raw_file]["h_samples"], run_time)
    return dict(zip(("accuracy", "fp", "fn"), total / len(gts)))


@pytest.fixture(scope="module")
def real_label() -> dict:
    """The real TuSimple label line (4 lanes, 56 rows, native 1280x720 px)."""
    line = fixture_path("tusimple", "train_set", "label_data_0601.json").read_text().splitlines()[0]
    doc = json.loads(line)
    return {"lanes": np.asarray(doc["lanes"], dtype=float), "h_samples": np.asarray(doc["h_samples"], dtype=float)}


def shift(lanes: np.ndarray, dx) -> np.ndarray:
    """Lanes moved by ``dx`` px where they have points (-2 kept)."""
    return np.where(lanes >= 0, lanes + dx, lanes)


def five_lanes(real_label) -> np.ndarray:
    """The real 4 lanes plus a fifth, far-right one (a lane change frame)."""
    extra = np.where(real_label["lanes"][2] >= 0, real_label["lanes"][2] + 150.0, NO_POINT)
    return np.vstack([real_label["lanes"], extra[None]])


def cases(label) -> dict:
    """name -> (pred lanes, gt lanes, run_time ms) on the real frame's rows."""
    gt, h = label["lanes"], label["h_samples"]
    rng = np.random.default_rng(0)
    gapped = gt.copy()
    gapped[:, 30:33] = NO_POINT  # 3 of ~45 points missing: still >= 85 %
    holey = gt.copy()
    holey[:, 20:40] = NO_POINT  # 20 missing: below 85 %
    on_absent = gt.copy()
    on_absent[gt < 0] = 600.0  # points where the GT has none
    steep = np.where(h >= 300, 200.0 + 2.0 * (h - 300.0), NO_POINT)[None]  # slope 2 px/row: threshold 44.7 px
    one_point = np.full((1, len(h)), NO_POINT)
    one_point[0, 50] = 640.0  # a single point: angle 0, threshold 20 px
    close = np.vstack([gt[1], shift(gt[1][None], 30.0)[0]])  # two GT lanes 30 px apart
    return {
        "perfect": (gt, gt, 0.0),
        "shift_15_inside": (shift(gt, 15.0), gt, 0.0),
        "shift_35_angle_decides": (shift(gt, 35.0), gt, 0.0),  # inside for the slanted lanes 0 and 3 only
        "shift_80_outside": (shift(gt, 80.0), gt, 0.0),
        "steep_lane_shift_40": (shift(steep, 40.0), steep, 0.0),
        "steep_lane_shift_46": (shift(steep, 46.0), steep, 0.0),
        "single_point_gt": (one_point + np.where(one_point >= 0, 19.0, 0.0), one_point, 0.0),
        "missing_two": (gt[[0, 3]], gt, 0.0),
        "no_prediction": (np.zeros((0, len(h))), gt, 0.0),
        "extra_two": (np.vstack([gt, shift(gt[:2], 300.0)]), gt, 0.0),
        "too_many_lanes": (np.vstack([gt, shift(gt, 300.0)[:3]]), gt, 0.0),
        "slow": (gt, gt, 250.0),
        "gaps_kept": (gapped, gt, 0.0),
        "gaps_too_many": (holey, gt, 0.0),
        "points_where_gt_has_none": (on_absent, gt, 0.0),
        "five_gt_four_found": (gt, five_lanes(label), 0.0),
        "five_gt_three_found": (gt[:3], five_lanes(label), 0.0),
        "five_gt_all_found": (five_lanes(label), five_lanes(label), 0.0),
        "one_prediction_two_gt": (gt[1][None], close, 0.0),
        "noisy_8px": (np.where(gt >= 0, gt + rng.normal(0, 8.0, gt.shape), gt), gt, 0.0),
        "noisy_20px": (np.where(gt >= 0, gt + rng.normal(0, 20.0, gt.shape), gt), gt, 0.0),
        "no_gt_lanes": (gt[:1], np.zeros((0, len(h))), 0.0),
    }


CASES = [
    "perfect",
    "shift_15_inside",
    "shift_35_angle_decides",
    "shift_80_outside",
    "steep_lane_shift_40",
    "steep_lane_shift_46",
    "single_point_gt",
    "missing_two",
    "no_prediction",
    "extra_two",
    "too_many_lanes",
    "slow",
    "gaps_kept",
    "gaps_too_many",
    "points_where_gt_has_none",
    "five_gt_four_found",
    "five_gt_three_found",
    "five_gt_all_found",
    "one_prediction_two_gt",
    "noisy_8px",
    "noisy_20px",
    "no_gt_lanes",
]


@pytest.mark.parametrize("name", CASES)
def test_tusimple_bench_equals_the_official_rules(real_label, name):
    pred, gt, run_time = cases(real_label)[name]
    got = tusimple_bench(pred, gt, real_label["h_samples"], run_time)
    want = reference_bench(list(pred), list(gt), real_label["h_samples"], run_time)
    assert got == pytest.approx(want, abs=1e-12)


def test_tusimple_bench_values_worked_by_hand(real_label):
    """Values derived from the rules by hand, so a misreading shared by both implementations fails."""
    c, h = cases(real_label), real_label["h_samples"]
    gt = real_label["lanes"]
    absent = (gt < 0).sum(axis=1)  # rows where the GT has no point count as correct for a -2 prediction
    assert tusimple_bench(*c["perfect"][:2], h) == (1.0, 0.0, 0.0)
    assert tusimple_bench(*c["shift_15_inside"][:2], h) == (1.0, 0.0, 0.0)
    # thresholds 20 sqrt(1 + k^2): lane 0 (k = -3.5) 72.8, 1 (k = -1.25) 32.0, 2 (k = 1.13) 30.2, 3 (k = 3.35) 69.9
    for k, inside in ((0, True), (1, False), (2, False), (3, True)):
        one = gt[k : k + 1]
        want = (1.0, 0.0, 0.0) if inside else (absent[k] / 56, 1.0, 1.0)  # only the shared -2 rows are right
        assert tusimple_bench(shift(one, 35.0), one, h) == pytest.approx(want), k
    assert tusimple_bench(*c["steep_lane_shift_40"][:2], h) == (1.0, 0.0, 0.0)  # 40 < 44.7
    assert tusimple_bench(*c["steep_lane_shift_46"][:2], h)[2] == 1.0  # 46 > 44.7
    acc, fp, fn = tusimple_bench(*c["missing_two"][:2], h)
    assert (fp, fn) == (0.0, 0.5) and 0.5 < acc < 0.75  # a missed lane still adds its best share of rows
    assert tusimple_bench(np.zeros((0, 56)), gt, h) == (0.0, 0.0, 1.0)
    assert tusimple_bench(*c["extra_two"][:2], h) == (1.0, 2 / 6, 0.0)
    assert tusimple_bench(*c["too_many_lanes"][:2], h) == (0.0, 0.0, 1.0)
    assert tusimple_bench(*c["slow"][:2], h, 250.0) == (0.0, 0.0, 1.0)
    assert tusimple_bench(*c["five_gt_four_found"][:2], h) == (1.0, 0.0, 0.0)  # one miss forgiven
    assert tusimple_bench(*c["five_gt_all_found"][:2], h) == (1.0, 0.0, 0.0)
    assert tusimple_bench(*c["one_prediction_two_gt"][:2], h)[1] == -1.0  # 1 prediction, 2 matches
    assert tusimple_bench(*c["no_gt_lanes"][:2], h) == (0.0, 1.0, 0.0)


def test_a_lane_of_another_length_is_a_format_error(real_label):
    gt, h = real_label["lanes"], real_label["h_samples"]
    with pytest.raises(MtlDataError, match="one x per h_sample"):
        tusimple_bench(gt[:, :-1], gt, h)


# ---- the metric --------------------------------------------------------------------------------


def truth_of(lanes: np.ndarray, h_samples: np.ndarray, size=(720, 1280), thickness=5.0, scale=(1.0, 1.0)) -> LaneTruth:
    return LaneTruth(
        h_samples=h_samples,
        lanes=lanes,
        mask=rasterize_lanes(lanes, h_samples, size, thickness),
        thickness=thickness,
        native_scale=scale,
    )


def test_metric_averages_images_as_the_official_script(real_label):
    h = real_label["h_samples"]
    c = cases(real_label)
    names = [
        "perfect",
        "shift_35_angle_decides",
        "missing_two",
        "extra_two",
        "noisy_20px",
        "five_gt_three_found",
        "slow",
    ]
    metric = LaneMetric()
    for name in names:
        pred, gt, run_time = c[name]
        metric.update(LanePrediction(h, pred, run_time), truth_of(gt, h))
    want = reference_submit(
        {n: (list(c[n][0]), c[n][2]) for n in names}, {n: {"lanes": list(c[n][1]), "h_samples": h} for n in names}
    )
    got = metric.compute()
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


def test_metric_merge_of_two_halves_equals_the_whole(real_label):
    h = real_label["h_samples"]
    pairs = [(LanePrediction(h, pred, rt), truth_of(gt, h)) for pred, gt, rt in cases(real_label).values()]
    whole, first, second = LaneMetric(), LaneMetric(), LaneMetric()
    for k, (pred, truth) in enumerate(pairs):
        whole.update(pred, truth)
        (first if k % 2 else second).update(pred, truth)
    first.merge(second)
    assert first.compute() == whole.compute()
    assert len(first.per_image) == len(pairs)


def test_metric_refuses_rows_that_differ_from_the_ground_truth(real_label):
    h, gt = real_label["h_samples"], real_label["lanes"]
    with pytest.raises(MtlDataError, match="h_samples"):
        LaneMetric().update(LanePrediction(h[1:], gt[:, 1:]), truth_of(gt, h))
    with pytest.raises(MtlDataError, match="h_samples") as info:
        LaneMetric().update(LanePrediction(h + 5.0, gt), truth_of(gt, h))
    assert isinstance(info.value, ValueError)  # what mtl-train score reports with the sample's key


def test_metric_without_images_is_nan_and_unlabelled_samples_are_not_scored(real_label):
    metric = LaneMetric()
    metric.update(LanePrediction(real_label["h_samples"], real_label["lanes"]), None)
    assert all(math.isnan(v) for v in metric.compute().values())


def test_the_20px_rule_is_applied_in_native_pixels():
    """A shard ingested at half size: 12 stored px are 24 native px, beyond the 20 px tolerance."""
    h = np.arange(0.0, 360.0, 5.0)  # (72,) stored rows of a 360x640 image of a 720x1280 original
    gt = np.full((1, h.size), 300.0)  # a vertical lane: threshold exactly 20 native px
    for dx, scale, expect in ((12.0, (2.0, 2.0), 0.0), (12.0, (1.0, 1.0), 1.0), (8.0, (2.0, 2.0), 1.0)):
        metric = LaneMetric()
        metric.update(LanePrediction(h, gt + dx), truth_of(gt, h, size=(360, 640), scale=scale))
        assert metric.compute()["accuracy"] == expect, (dx, scale)


def test_lane_iou_is_binary_over_the_dataset_without_ignored_pixels():
    h = np.arange(20.0)
    gt = np.full((1, 20), 10.0)  # a 1 px wide vertical line: 20 pixels
    truth = truth_of(gt, h, size=(20, 30), thickness=1.0)
    cases_ = {"same": (gt, 1.0), "next_column": (gt + 1.0, 0.0), "both": (np.vstack([gt, gt + 1.0]), 0.5)}
    total = LaneMetric()
    for name, (pred, want) in cases_.items():
        metric = LaneMetric()
        metric.update(LanePrediction(h, pred), truth)
        total.update(LanePrediction(h, pred), truth)
        assert metric.compute()["iou"] == want, name
    assert total.compute()["iou"] == (20 + 0 + 20) / (20 + 40 + 40)
    ignored = truth.mask.copy()
    ignored[:, 11] = 255  # the wrongly predicted column is not scored
    metric = LaneMetric()
    metric.update(LanePrediction(h, gt + 1.0), LaneTruth(h, gt, ignored, 1.0))
    metric.update(LanePrediction(h, np.vstack([gt, gt + 1.0])), LaneTruth(h, gt, ignored, 1.0))
    assert (metric.intersection, metric.union) == (20, 40)


# ---- loss and head -----------------------------------------------------------------------------


def test_head_gives_one_logit_map_per_slot_at_the_input_size():
    task = create_task("lane", max_lanes=6)
    head = task.build_head(FeatureSpec(8))
    feats = [torch.zeros(2, 8, 32 // s * 4, 64 // s * 4) for s in (4, 8, 16, 32)]
    assert head(feats, (128, 256)).shape == (2, 7, 128, 256)


def test_absent_task_gives_zero_loss_and_no_head_gradient(real_shards):
    batch = batch_from_shards(real_shards, ["kitti_train_000001", "gtsrb_test_00000"], SIZE)
    task = create_task("lane")
    assert_absent_task_gives_zero_loss_and_gradient(task, task.build_head(FeatureSpec(8)), batch)


def test_all_ignored_pixels_give_zero_loss_not_nan(real_shards):
    batch = batch_from_shards(real_shards, [KEY, KEY], SIZE)
    batch["lane"][0] = 255  # a crop that is all letterbox padding
    task = create_task("lane")
    head = task.build_head(FeatureSpec(8))
    per_sample = task.loss(head(random_features(batch), SIZE), batch)
    assert per_sample[0].item() == 0.0 and per_sample[1].item() > 0
    batch["lane"][1] = 255
    loss = task.batch_loss(head(random_features(batch), SIZE), batch)
    loss.backward()
    assert loss.item() == 0.0
    assert all(torch.isfinite(p.grad).all() for p in head.parameters())


def test_loss_is_the_weighted_mean_cross_entropy_over_valid_pixels(real_shards):
    """Uniform logits: every pixel costs log(1 + L), so any weighted mean is log(1 + L); ids above L
    and 255 are left out (the result would not be finite or would change otherwise)."""
    batch = batch_from_shards(real_shards, [KEY], SIZE)
    task = create_task("lane", max_lanes=2)  # the real frame has 4 lanes: ids 3 and 4 are ignored
    logits = torch.zeros(1, 3, *SIZE)
    assert task.loss(logits, batch).item() == pytest.approx(math.log(3), rel=1e-6)
    perfect = torch.nn.functional.one_hot(batch["lane"].clamp(max=2), 3).permute(0, 3, 1, 2).float() * 20.0
    assert task.loss(perfect, batch).item() < 1e-6


def test_config_refuses_bad_values():
    with pytest.raises(MtlDataError, match="max_lanes"):
        LaneConfig(max_lanes=255)
    with pytest.raises(MtlDataError, match="background_weight"):
        LaneConfig(background_weight=0.0)


# ---- decoding ----------------------------------------------------------------------------------


def perfect_logits(batch, slots=9) -> torch.Tensor:
    """Logits whose argmax is the batch's own lane map (ignore -> background)."""
    lane = torch.where(batch["lane"] == 255, 0, batch["lane"])  # (B, H, W)
    return torch.nn.functional.one_hot(lane, slots).permute(0, 3, 1, 2).float() * 10.0  # (B, slots, H, W)


@pytest.mark.parametrize("how", ["letterbox", "stretch", "flip", "letterbox_flip"])
def test_decoding_a_perfect_output_scores_full_accuracy_in_stored_pixels(real_shards, how):
    flip = "flip" in how
    batch = batch_from_shards(
        real_shards, [KEY], SIZE, letterbox=how.startswith("letterbox"), flip=flip, tasks=("lane",) if flip else None
    )
    assert batch["flipped"].tolist() == [flip]
    task = create_task("lane")
    [pred] = task.decode(perfect_logits(batch), batch)
    truth = task.ground_truth(ShardSet.open(real_shards).read_sample(KEY))
    np.testing.assert_allclose(pred.h_samples, truth.h_samples, atol=0.01)
    metric = task.metric()
    metric.update(pred, truth)
    result = metric.compute()
    assert (result["accuracy"], result["fp"], result["fn"]) == (1.0, 0.0, 0.0)
    assert result["iou"] > 0.7  # 1 output px = 5 stored px: the redrawn 5 px lines overlap most
    # Lane k is GT lane k (left to right, also after a flip); x within an output pixel of the truth.
    assert pred.lanes.shape == truth.lanes.shape
    both = (pred.lanes >= 0) & (truth.lanes >= 0)
    assert ((pred.lanes >= 0) == (truth.lanes >= 0)).mean() > 0.95
    err = np.abs(pred.lanes - truth.lanes)[both]
    px = 1.0 / float(batch["scale"][0, 1])  # stored px per output px
    assert err.mean() < 0.8 * px and err.max() < 2.0 * px


def test_decoding_an_unlabelled_sample_samples_every_10_stored_rows(real_shards):
    batch = batch_from_shards(real_shards, [KEY, "kitti_train_000001"], SIZE)
    task = create_task("lane")
    preds = task.decode(perfect_logits(batch), batch)
    h = int(batch["size"][1, 0])
    np.testing.assert_array_equal(preds[1].h_samples, np.arange(0, h, 10))
    assert preds[1].lanes.shape == (0, len(preds[1].h_samples))  # all background: no lanes
    assert len(preds[0].lanes) == 4


def test_decoding_drops_short_lanes_keeps_the_longest_and_skips_dummy_slots(real_shards):
    batch = batch_from_shards(real_shards, [KEY], SIZE)
    batch = {**batch, "key": [KEY]}
    logits = perfect_logits(batch)
    logits[0, :, 0:2, 0:3] = 0.0
    logits[0, 5, 0:2, 0:3] = 10.0  # a 2-row blob in slot 5: fewer than min_lane_points points
    [pred] = create_task("lane", min_lane_points=3).decode(logits, batch)
    assert len(pred.lanes) == 4
    [pred] = create_task("lane", max_output_lanes=2).decode(perfect_logits(batch), batch)
    assert len(pred.lanes) == 2 and np.all(np.diff(pred.lanes.max(axis=1)) != 0)
    dummy = {**batch, "key": [""]}
    assert create_task("lane").decode(perfect_logits(batch), dummy) == [None]


def identity_batch(ids: torch.Tensor, rows) -> dict:
    """A one-sample batch whose output pixels are the stored pixels, with logits argmax = ``ids``."""
    h, w = ids.shape
    return {
        "key": ["k"],
        "image": torch.zeros(1, 3, h, w),
        "size": torch.tensor([[h, w]]),
        "scale": torch.ones(1, 2),
        "offset": torch.zeros(1, 2),
        "flipped": torch.tensor([False]),
        "lane_h": torch.tensor([rows], dtype=torch.float32),
        "lane_rows": torch.tensor([len(rows)]),
    }


def test_decoding_interpolates_between_rows_and_stops_half_a_row_past_a_lane_end():
    ids = torch.zeros(40, 100, dtype=torch.long)
    for r in range(5, 31):
        ids[r, 2 * r + 5] = 1  # x = 2 y + 5 on rows 5..30, one pixel per row
    rows = [5.0, 10.25, 20.5, 29.75, 30.4, 30.6, 35.0]
    logits = torch.nn.functional.one_hot(ids, 9).permute(2, 0, 1)[None].float()
    [pred] = create_task("lane").decode(logits, identity_batch(ids, rows))
    np.testing.assert_allclose(pred.lanes, [[15.0, 25.5, 46.0, 64.5, 65.0, NO_POINT, NO_POINT]])


def test_decoding_ignores_lane_pixels_in_the_letterbox_padding(real_shards):
    batch = batch_from_shards(real_shards, [KEY], SIZE, letterbox=True)
    left = int(batch["offset"][0, 1])
    assert left > 0
    logits = perfect_logits(batch)
    logits[0, :, :, :left] = 0.0
    logits[0, 5, :, :left] = 10.0  # the network "sees" a lane in the grey padding
    [pred] = create_task("lane").decode(logits, batch)
    assert len(pred.lanes) == 4 and pred.lanes.min() == NO_POINT and pred.lanes.max() > 0


# ---- export --------------------------------------------------------------------------------------


def test_lane_json_round_trip(tmp_path, real_label):
    task = create_task("lane")
    h = real_label["h_samples"]
    preds = {
        "a": LanePrediction(h, shift(real_label["lanes"], 0.25), 12.5),
        "b": LanePrediction(h, np.zeros((0, len(h)))),
        "c": LanePrediction(h / 3.0, real_label["lanes"][:1] / 3.0),
    }
    writer = task.writer(tmp_path)
    for key, pred in preds.items():
        writer.add(key, pred, None)
    assert not task.holds_predictions(tmp_path)
    writer.close()
    assert task.holds_predictions(tmp_path) and not list(tmp_path.glob("*.part"))
    lines = (tmp_path / "lane.json").read_text().splitlines()
    assert [sorted(json.loads(line)) for line in lines] == [["h_samples", "lanes", "raw_file", "run_time"]] * 3
    assert json.loads(lines[0])["lanes"][0][:11] == [-2] * 11  # TuSimple's "no point"
    back = task.read_predictions(tmp_path)
    assert list(back) == list(preds)
    for key, pred in preds.items():
        np.testing.assert_array_equal(back[key].h_samples, pred.h_samples)
        np.testing.assert_array_equal(back[key].lanes, pred.lanes)
        assert back[key].run_time_ms == pred.run_time_ms


GOOD = '{"raw_file": "a", "lanes": [[1, -2]], "h_samples": [10, 20], "run_time": 0}'


@pytest.mark.parametrize(
    "line, says",
    [
        ('{"raw_file": "b", "lanes": [[1, 2]], "h_samples": [10, 20], "run_time": 0', "not valid JSON"),
        ('{"raw_file": "b", "h_samples": [10, 20], "run_time": 0}', "missing key(s) lanes"),
        ('{"raw_file": "b", "lanes": [[1, 2]], "h_samples": [10, 20]}', "missing key(s) run_time"),
        ('["b"]', "JSON object"),
        ('{"raw_file": 3, "lanes": [[1, 2]], "h_samples": [10, 20], "run_time": 0}', "raw_file"),
        ('{"raw_file": "b", "lanes": "1 2", "h_samples": [10, 20], "run_time": 0}', "lanes must be"),
        ('{"raw_file": "b", "lanes": [[1, "2"]], "h_samples": [10, 20], "run_time": 0}', "not a finite number"),
        ('{"raw_file": "b", "lanes": [[1, NaN]], "h_samples": [10, 20], "run_time": 0}', "not a finite number"),
        ('{"raw_file": "b", "lanes": [[1, 2]], "h_samples": [10, "20"], "run_time": 0}', "h_samples"),
        ('{"raw_file": "b", "lanes": [[1, 2]], "h_samples": [10, 20], "run_time": "fast"}', "run_time"),
        ('{"raw_file": "b", "lanes": [[1, 2, 3]], "h_samples": [10, 20], "run_time": 0}', "3 values for 2 h_samples"),
        (GOOD, "already predicted on line 1"),
    ],
)
def test_malformed_lane_json_names_file_and_line(tmp_path, line, says):
    path = tmp_path / "lane.json"
    message = prediction_read_error(create_task("lane"), tmp_path, path, GOOD + "\n" + line + "\n")
    assert message.startswith(f"{path}:2: ") and says in message, message
    assert "\n" not in message


def test_reading_a_missing_file_is_one_clear_error(tmp_path):
    with pytest.raises(MtlDataError, match="cannot read lane predictions"):
        read_lane_json(tmp_path / "lane.json")
