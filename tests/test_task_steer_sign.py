"""The steer and sign tasks: losses under partial labels, decoding (un-mirroring steering), metrics
against plain numpy, and the ``key,value`` CSV export with its errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import (
    assert_absent_task_gives_zero_loss_and_gradient,
    batch_from_shards,
    batch_of_samples,
    prediction_read_error,
    random_features,
    write_task_predictions,
)

from mtl_data.errors import MtlDataError
from mtl_data.schema.sample import Sample, Steer
from mtl_data.schema.taxonomy import SIGN_CLASSES
from mtl_data.shards.reader import ShardSet
from mtl_data.train.tasks import FeatureSpec, create_task
from mtl_data.train.tasks.sign import SignMetric
from mtl_data.train.tasks.steer import SteerMetric

A2D2 = "a2d2_train_20180807145028_frontcenter_000006882"
CITY = "cityscapes_val_frankfurt_000000_000294"
KITTI = "kitti_train_000000"
TUSIMPLE = "tusimple_train_clips_0601_1494453497604532231_20"
GTSRB = ("gtsrb_train_00000_00000_00000", "gtsrb_train_00020_00000_00001", "gtsrb_test_00000", "gtsrb_test_00002")
SIZE = (64, 128)
SPEC = FeatureSpec(channels=8)


def head_gradients_are_zero(head: torch.nn.Module) -> bool:
    return all(p.grad is not None and torch.count_nonzero(p.grad) == 0 for p in head.parameters())


def steer_samples(angles) -> list[Sample]:
    """Small frames labelled with steering only (the real fixtures have no steering label)."""
    return [
        Sample(
            key=f"a2d2_train_steer_{i}",
            source="a2d2",
            split="train",
            id=str(i),
            image=np.full((48, 80, 3), 10 * i, np.uint8),
            orig_size=(48, 80),
            steer=Steer(angle_deg=float(a), speed_kmh=None, gap_ms=0.0),
        )
        for i, a in enumerate(angles)
    ]


# ---- steer: loss and head --------------------------------------------------------------------


def steer_head():
    torch.manual_seed(0)
    task = create_task("steer", hidden=16)
    head = task.build_head(SPEC)
    torch.nn.init.normal_(head.fc2.weight)  # not the zero start: gradients must be able to flow
    return task, head


def test_an_untrained_steer_head_predicts_zero_degrees_and_later_degrees_in_scale_units():
    task = create_task("steer", hidden=16)
    head = task.build_head(SPEC)
    features = [torch.randn(3, SPEC.channels, 64 // s, 64 // s) for s in SPEC.strides]
    assert head(features, (64, 64)).tolist() == [0.0, 0.0, 0.0]
    with torch.no_grad():
        head.fc2.bias.fill_(1.0)
    assert head(features, (64, 64)).tolist() == [task.config.scale_deg] * 3


def test_steer_loss_is_huber_in_degrees_divided_by_the_scale():
    task = create_task("steer", scale_deg=20.0, huber_delta_deg=4.0)
    pred = torch.tensor([0.0, 3.0, -10.0, 100.0])
    target = torch.tensor([1.0, 0.0, 10.0, -50.0])
    e = np.abs(pred.numpy() - target.numpy())
    huber_deg = np.where(e < 4.0, 0.5 * e**2 / 4.0, e - 2.0)
    np.testing.assert_allclose(task.loss(pred, {"steer": target}).numpy(), huber_deg / 20.0, rtol=1e-6)


def test_absent_steer_gives_zero_loss_and_zero_gradient_into_the_head(real_shards):
    batch = batch_from_shards(real_shards, [A2D2, KITTI, GTSRB[0], TUSIMPLE], SIZE)
    task, head = steer_head()
    features = assert_absent_task_gives_zero_loss_and_gradient(task, head, batch)
    assert torch.count_nonzero(features[-1].grad) == 0  # the stride-32 map it pools


def test_steer_loss_is_finite_on_samples_without_steering_and_trains_the_labelled_one(real_shards):
    batch = batch_from_shards(real_shards, [A2D2, KITTI], SIZE)
    labelled = batch_of_samples(steer_samples([45.0]), SIZE)
    for key in ("steer", "image"):
        batch[key] = torch.cat([labelled[key], batch[key]])
    batch["present"] = {"steer": torch.tensor([True, False, False])}
    task, head = steer_head()
    out = head(random_features(batch), SIZE)
    per_sample = task.loss(out, batch)
    assert torch.isfinite(per_sample).all() and per_sample[0] > 0
    task.batch_loss(out, batch).backward()
    assert not head_gradients_are_zero(head)  # the zero-gradient check can fail


# ---- steer: decoding -------------------------------------------------------------------------


@pytest.mark.parametrize("flip", [False, True])
def test_decoding_steering_gives_the_stored_angle_for_mirrored_samples_too(flip):
    angles = [30.5, -12.25, 0.0, 400.0]
    batch = batch_of_samples([*steer_samples(angles), None], SIZE, flip=flip)
    assert batch["flipped"].tolist() == [flip] * 4 + [False]
    if flip:  # the loader negated the labels of the mirrored images
        assert batch["steer"][:4].tolist() == [-a for a in angles]
    decoded = create_task("steer").decode(batch["steer"].clone(), batch)  # a perfect output
    assert decoded == angles + [None]


# ---- steer: metric ---------------------------------------------------------------------------


def steer_pairs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.normal(0, 60, size=57)
    pred = truth + rng.standard_t(2, size=57) * 5  # heavy-tailed errors
    return pred, truth


def test_steer_metric_matches_numpy_mae_and_rmse():
    pred, truth = steer_pairs()
    metric = create_task("steer").metric()
    for p, t in zip(pred, truth):
        metric.update(float(p), float(t))
    values = metric.compute()
    assert list(values) == ["mae_deg", "rmse_deg"]
    assert values["mae_deg"] == pytest.approx(np.mean(np.abs(pred - truth)), rel=1e-12)
    assert values["rmse_deg"] == pytest.approx(np.sqrt(np.mean((pred - truth) ** 2)), rel=1e-12)
    assert values["mae_deg"] > 1.0


def test_steer_metrics_merged_from_halves_equal_one_metric_on_everything_exactly():
    pred, truth = steer_pairs(1)
    whole, first, second = SteerMetric(), SteerMetric(), SteerMetric()
    for i, (p, t) in enumerate(zip(pred, truth)):
        whole.update(p, t)
        (first if i % 2 else second).update(p, t)
    second.merge(first)
    assert second.compute() == whole.compute()


def test_steer_metric_refuses_a_missing_or_non_finite_prediction_and_is_nan_when_empty():
    metric = SteerMetric()
    for bad in (None, float("nan")):
        with pytest.raises(ValueError, match="finite number"):
            metric.update(bad, 1.0)
    assert all(math.isnan(v) for v in metric.compute().values())


# ---- sign: loss, head, decoding --------------------------------------------------------------


def sign_head():
    torch.manual_seed(0)
    task = create_task("sign")
    return task, task.build_head(SPEC)


def test_absent_sign_gives_zero_loss_and_zero_gradient_into_the_head(real_shards):
    batch = batch_from_shards(real_shards, [A2D2, KITTI, CITY, TUSIMPLE], SIZE)
    task, head = sign_head()
    features = assert_absent_task_gives_zero_loss_and_gradient(task, head, batch)
    assert torch.count_nonzero(features[-1].grad) == 0


def test_sign_loss_is_finite_on_samples_without_a_sign_and_is_the_cross_entropy(real_shards):
    batch = batch_from_shards(real_shards, [GTSRB[1], A2D2, KITTI], SIZE)
    assert batch["present"]["sign"].tolist() == [True, False, False]
    task, head = sign_head()
    out = head(random_features(batch), SIZE)
    per_sample = task.loss(out, batch)
    assert torch.isfinite(per_sample).all()
    expected = -torch.log_softmax(out, dim=1)[0, 20]  # GTSRB class 20
    assert per_sample[0].item() == pytest.approx(expected.item(), rel=1e-6)
    task.batch_loss(out, batch).backward()
    assert not head_gradients_are_zero(head)


def test_decoding_perfect_sign_logits_gives_the_stored_class(real_shards):
    # Letterboxed and with flips asked for: sign crops are never mirrored, so nothing to undo.
    shards = ShardSet.open(real_shards)
    samples = [shards.read_sample(k) for k in GTSRB]
    batch = batch_of_samples([*samples, None], SIZE, letterbox=True, flip=True)
    assert not batch["flipped"].any()
    task = create_task("sign")
    logits = torch.nn.functional.one_hot(batch["sign"], len(SIGN_CLASSES)).float() * 5  # (B, 43)
    assert task.decode(logits, batch) == [task.ground_truth(s) for s in samples] + [None]
    assert task.ground_truth(shards.read_sample(KITTI)) is None


# ---- sign: metric ----------------------------------------------------------------------------


def sign_pairs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.choice([0, 1, 2, 14, 38], p=[0.5, 0.2, 0.15, 0.1, 0.05], size=200)  # unbalanced
    pred = np.where(rng.random(200) < 0.7, truth, rng.integers(0, 43, size=200))
    pred[truth == 14] = 13  # 'Stop' always mistaken for 'Yield'
    return pred, truth


def test_sign_metric_matches_numpy_top1_and_mean_class_accuracy():
    pred, truth = sign_pairs()
    metric = create_task("sign").metric()
    for p, t in zip(pred, truth):
        metric.update(int(p), int(t))
    values = metric.compute()
    assert values["top1"] == pytest.approx(np.mean(pred == truth), rel=1e-12)
    classes = np.unique(truth)
    per_class = {c: np.mean(pred[truth == c] == c) for c in classes}
    assert values["mean_class_acc"] == pytest.approx(np.mean(list(per_class.values())), rel=1e-12)
    assert values["top1"] != pytest.approx(values["mean_class_acc"])  # unbalanced: they differ
    for c in classes:
        assert values[f"acc/{SIGN_CLASSES[c]}"] == pytest.approx(per_class[c], rel=1e-12)
    assert values["acc/Stop"] == 0.0
    assert math.isnan(values["acc/Keep left"])  # no ground truth of class 39


def test_sign_metrics_merged_from_halves_equal_one_metric_on_everything():
    pred, truth = sign_pairs(1)
    whole, first, second = (SignMetric(SIGN_CLASSES) for _ in range(3))
    for i, (p, t) in enumerate(zip(pred, truth)):
        whole.update(p, t)
        (first if i % 2 else second).update(p, t)
    first.merge(second)
    a, b = first.compute(), whole.compute()
    assert all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in b)


# ---- export ----------------------------------------------------------------------------------


def test_steer_and_sign_predictions_round_trip_through_csv_exactly(tmp_path):
    steer, sign = create_task("steer"), create_task("sign")
    steer_values = {"a2d2_train_b": 0.1 + 0.2, "a2d2_train_a": -123.456789012345, "a2d2_train_c": 1e-300}
    sign_values = {"gtsrb_test_00001": 1, "gtsrb_test_00000": 42}
    assert not steer.holds_predictions(tmp_path)
    write_task_predictions(steer, tmp_path, steer_values)
    write_task_predictions(sign, tmp_path, sign_values)
    assert steer.holds_predictions(tmp_path) and sign.holds_predictions(tmp_path)
    assert steer.read_predictions(tmp_path) == steer_values
    assert sign.read_predictions(tmp_path) == sign_values
    lines = (tmp_path / "sign.csv").read_text().splitlines()
    assert lines == ["key,value", "gtsrb_test_00000,42", "gtsrb_test_00001,1"]  # sorted by key
    assert not list(tmp_path.glob("*.part"))


@pytest.mark.parametrize(
    ("task_name", "text", "line", "says"),
    [
        ("steer", "key,value\na,1.5\nb,left\n", 3, "'left' of 'b' is not a finite steering angle"),
        ("steer", "key,value\na,1.5\na,2.5\n", 3, "duplicate key 'a' (first on line 2)"),
        ("steer", "key,value\na,1.5,7\n", 2, "expected 2 fields"),
        ("steer", "key,value\n\na,nan\n", 3, "'nan'"),
        ("steer", "key;value\na;1\n", 1, "expected the header key,value"),
        ("steer", "key,value\n,3\n", 2, "empty sample key"),
        ("sign", "key,value\nx,3.0\n", 2, "'3.0' of 'x' is not a class id in 0..42"),
        ("sign", "key,value\nx,43\n", 2, "not a class id"),
        ("sign", "key,value\nx,1\ny\n", 3, "expected 2 fields"),
    ],
)
def test_reading_a_malformed_csv_names_the_file_and_line(tmp_path, task_name, text, line, says):
    path = tmp_path / f"{task_name}.csv"
    message = prediction_read_error(create_task(task_name), tmp_path, path, text)
    assert message.startswith(f"{path}:{line}: ") and says in message and "\n" not in message


@pytest.mark.parametrize("content", [b"", b"\xff\xfe\x00garbage"])
def test_reading_an_empty_or_binary_csv_names_the_file(tmp_path, content):
    path = tmp_path / "sign.csv"
    path.write_bytes(content)
    with pytest.raises(MtlDataError, match=str(path)):
        create_task("sign").read_predictions(tmp_path)


def test_a_hand_written_csv_with_a_byte_order_mark_and_spaces_reads(tmp_path):
    (tmp_path / "steer.csv").write_text("\ufeffkey , value\n a2d2_train_x , -2.5 \n\n", encoding="utf-8")
    assert create_task("steer").read_predictions(tmp_path) == {"a2d2_train_x": -2.5}
