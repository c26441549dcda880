"""The depth task: the scale-invariant loss (Eigen et al. 2014), partial labels, decoding to stored
pixels, the Eigen/KITTI metrics against a plain numpy computation, and the KITTI PNG export."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
from conftest import (
    assert_absent_task_gives_zero_loss_and_gradient,
    batch_from_shards,
    prediction_read_error,
    random_features,
    write_task_predictions,
)

from mtl_data.shards.reader import ShardSet
from mtl_data.train.tasks import FeatureSpec, create_task
from mtl_data.train.tasks.base import view_of
from mtl_data.train.tasks.depth import DepthMetric, metres_to_png, scale_invariant_loss

A2D2 = "a2d2_train_20180807145028_frontcenter_000006882"
CITY = "cityscapes_val_frankfurt_000000_000294"
KITTI = ("kitti_train_000000", "kitti_train_000001")
GTSRB = "gtsrb_train_00000_00000_00000"
TUSIMPLE = "tusimple_train_clips_0601_1494453497604532231_20"
SIZE = (64, 128)
SPEC = FeatureSpec(channels=8)
KEYS = ("abs_rel", "sq_rel", "rmse", "log_rmse", "delta1", "delta2", "delta3")


def tiny_depth():
    torch.manual_seed(0)
    task = create_task("depth", hidden=8)
    return task, task.build_head(SPEC)


# ---- the scale-invariant loss ----------------------------------------------------------------


def numpy_si(pred: np.ndarray, target: np.ndarray, lam: float, sign: float = -1.0) -> float:
    """Eigen et al. 2014 eq. 4 for one image, written out; ``sign=+1`` is the thesis' version."""
    valid = target > 0
    if not valid.any():
        return 0.0
    d = np.log(pred[valid].astype(np.float64)) - np.log(target[valid].astype(np.float64))
    n = d.size
    return float(np.sum(d**2) / n + sign * lam * np.sum(d) ** 2 / n**2)


def si_inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    target = rng.uniform(2.0, 60.0, size=(3, 8, 10)).astype(np.float32)
    target[rng.random(target.shape) < 0.6] = 0.0  # sparse, like LiDAR
    target[2] = 0.0  # no valid pixel at all
    pred = target * rng.uniform(0.7, 1.4, size=target.shape) + rng.uniform(1, 5, size=target.shape)
    return torch.from_numpy(pred.astype(np.float32)), torch.from_numpy(target)


@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0])
def test_scale_invariant_loss_is_eigen_et_al_eq_4_per_sample(lam):
    pred, target = si_inputs()
    got = scale_invariant_loss(pred, target, lam)
    expected = [numpy_si(pred[b].numpy(), target[b].numpy(), lam) for b in range(3)]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-7)
    assert got[2].item() == 0.0  # no valid pixel -> 0


def test_scale_invariant_loss_at_lambda_one_ignores_a_global_scale_and_the_flipped_sign_does_not():
    pred, target = si_inputs(1)
    base = scale_invariant_loss(pred, target, 1.0)
    for alpha in (0.25, 3.0):
        np.testing.assert_allclose(
            scale_invariant_loss(pred * alpha, target, 1.0).numpy(), base.numpy(), rtol=1e-4, atol=1e-6
        )
        # lambda = 0.5 (the training default) only partly forgives the scale ...
        assert scale_invariant_loss(pred * alpha, target, 0.5)[0] > scale_invariant_loss(pred, target, 0.5)[0] + 0.05
        # ... and the reference thesis' "+" instead of "-" is not scale invariant at all.
        p, t = pred[0].numpy(), target[0].numpy()
        assert abs(numpy_si(p * alpha, t, 1.0, sign=+1.0) - numpy_si(p, t, 1.0, sign=+1.0)) > 0.1
        assert numpy_si(p * alpha, t, 1.0) == pytest.approx(numpy_si(p, t, 1.0), rel=1e-6)


def test_depth_loss_without_any_valid_pixel_is_zero_with_zero_finite_gradient():
    pred = torch.full((2, 4, 5), 7.0, requires_grad=True)
    loss = scale_invariant_loss(pred, torch.zeros(2, 4, 5), 0.5)
    assert loss.tolist() == [0.0, 0.0]
    loss.sum().backward()
    assert torch.count_nonzero(pred.grad) == 0


# ---- head and partial labels -----------------------------------------------------------------


def test_depth_head_gives_positive_metres_at_the_input_size_and_starts_at_init_depth():
    task, head = tiny_depth()
    features = [torch.randn(2, SPEC.channels, 64 // s, 96 // s) for s in SPEC.strides]
    out = head(features, (64, 96))
    assert out.shape == (2, 1, 64, 96)
    assert (out > task.config.pred_min_m).all() and (out < task.config.pred_max_m).all()
    with torch.no_grad():
        head.dense.out.weight.zero_()
    np.testing.assert_allclose(head(features, (64, 96)).detach().numpy(), task.config.init_depth_m, rtol=1e-5)
    with torch.no_grad():  # the bounds hold for any input, however extreme
        head.dense.out.weight.fill_(1e3)
        extreme = head(features, (64, 96))
    assert torch.isfinite(extreme).all() and (extreme > 0).all()


def test_absent_depth_gives_zero_loss_and_zero_gradient_into_the_head(real_shards):
    batch = batch_from_shards(real_shards, [A2D2, GTSRB, TUSIMPLE, CITY], SIZE)
    task, head = tiny_depth()
    features = assert_absent_task_gives_zero_loss_and_gradient(task, head, batch)
    assert torch.count_nonzero(features[0].grad) == 0


def test_depth_loss_is_finite_on_samples_without_depth_and_trains_the_labelled_one(real_shards):
    batch = batch_from_shards(real_shards, [KITTI[0], A2D2, GTSRB, CITY], SIZE)
    assert batch["present"]["depth"].tolist() == [True, False, False, False]
    task, head = tiny_depth()
    out = head(random_features(batch), SIZE)
    per_sample = task.loss(out, batch)
    assert torch.isfinite(per_sample).all() and per_sample[0] > 0
    assert per_sample[1:].tolist() == [0.0, 0.0, 0.0]  # zero targets = no valid pixel
    task.batch_loss(out, batch).backward()
    assert torch.count_nonzero(head.dense.out.weight.grad) > 0  # the zero-gradient check can fail


# ---- decoding to stored pixels ---------------------------------------------------------------

CASES = [((64, 128), False, False), ((64, 128), False, True), ((64, 96), True, False), ((64, 96), True, True)]


def linear_field(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A depth that is linear in stored pixel coordinates: bilinear resampling reproduces it exactly."""
    return 5.0 + 0.02 * x + 0.05 * y


def inner(size: int, content: int, scale: float) -> np.ndarray:
    """Stored coordinates whose content coordinate ``(c + 0.5) s - 0.5`` is inside [0, content - 1]
    (outside, interpolation clamps at the content's edge)."""
    c = (np.arange(size) + 0.5) * scale - 0.5
    return (c >= 0) & (c <= content - 1)


@pytest.mark.parametrize(("image_size", "letterbox", "flip"), CASES)
def test_decoding_a_depth_linear_in_stored_pixels_gives_it_back_exactly(real_shards, image_size, letterbox, flip):
    """The inverse mapping is exact: an output that holds f(stored x, stored y) at every pixel
    (placed with ``View``) decodes to f at every stored pixel away from the content's edge."""
    batch = batch_from_shards(real_shards, list(KITTI), image_size, letterbox, flip=flip)
    assert batch["flipped"].tolist() == [flip, flip]
    h_out, w_out = image_size
    output = torch.zeros(2, 1, h_out, w_out)
    for i in range(2):
        view = view_of(batch, i)
        xs, ys = view.to_stored_x(np.arange(w_out)), view.to_stored_y(np.arange(h_out))
        output[i, 0] = torch.from_numpy(linear_field(xs[None, :], ys[:, None]))
    decoded = create_task("depth").decode(output, batch)
    for i in range(2):
        pl = view_of(batch, i).placement
        (h, w), (nh, nw) = pl.src_size, pl.content_size
        assert decoded[i].shape == (h, w) and decoded[i].dtype == np.float32
        rows, cols = inner(h, nh, pl.sy), inner(w, nw, pl.sx)
        assert rows.mean() > 0.9 and cols.mean() > 0.9
        expected = linear_field(np.arange(w)[None, :], np.arange(h)[:, None])
        np.testing.assert_allclose(decoded[i][np.ix_(rows, cols)], expected[np.ix_(rows, cols)], rtol=2e-6)


@pytest.mark.parametrize(("image_size", "letterbox", "flip"), CASES)
def test_decoding_the_batch_depth_target_gives_back_the_stored_depth_where_valid(
    real_shards, image_size, letterbox, flip
):
    """Perfect output = the batch's own (min-pooled, sparse) target. At stored LiDAR pixels whose
    output neighbourhood is measured, the decoded depth is a blend of the target pixels around it,
    so within their range, and close to the stored depth: median relative error < 6% (the
    min-pooling of up to 13 x 13 stored pixels into one costs up to 4% here; a decode that gets
    the mirror wrong is off by 13-34%, checked too)."""
    batch = batch_from_shards(real_shards, list(KITTI), image_size, letterbox, flip=flip)
    task = create_task("depth")
    decoded = task.decode(batch["depth"][:, None].clone(), batch)
    mirrored = task.decode(batch["depth"][:, None].clone(), dict(batch, flipped=~batch["flipped"]))
    shards = ShardSet.open(real_shards)
    for i, key in enumerate(KITTI):
        stored = shards.read_sample(key).depth
        target = batch["depth"][i].numpy()
        pl, flipped = view_of(batch, i).placement, bool(batch["flipped"][i])
        r, c = np.nonzero(stored)
        y = (r + 0.5) * pl.sy - 0.5 + pl.top  # output coordinates of the stored LiDAR pixels
        x = (c + 0.5) * pl.sx - 0.5 + pl.left
        x = (pl.out_size[1] - 1) - x if flipped else x
        y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
        keep = (y0 >= 0) & (x0 >= 0) & (y0 + 1 < pl.out_size[0]) & (x0 + 1 < pl.out_size[1])
        r, c, y0, x0 = r[keep], c[keep], y0[keep], x0[keep]
        corners = np.stack([target[y0, x0], target[y0 + 1, x0], target[y0, x0 + 1], target[y0 + 1, x0 + 1]])  # (4, n)
        measured = (corners > 0).all(axis=0)
        assert measured.sum() > 1000
        got, lo, hi = decoded[i][r, c][measured], corners.min(0)[measured], corners.max(0)[measured]
        assert ((got >= lo - 1e-4) & (got <= hi + 1e-4)).all()
        truth = stored[r, c][measured]
        assert np.median(np.abs(got - truth) / truth) < 0.06
        assert np.median(np.abs(mirrored[i][r, c][measured] - truth) / truth) > 0.1


# ---- the metric ------------------------------------------------------------------------------


def numpy_depth_metrics(pairs, min_depth: float, max_depth: float) -> dict[str, float]:
    """monodepth2's ``compute_errors`` per image (GT in [min, max], prediction clipped), averaged."""
    rows = []
    for pred, gt in pairs:
        mask = (gt >= min_depth) & (gt <= max_depth)
        if not mask.any():
            continue
        g = gt[mask].astype(np.float64)
        p = np.clip(pred[mask].astype(np.float64), min_depth, max_depth)
        thresh = np.maximum(g / p, p / g)
        rows.append(
            {
                "abs_rel": np.mean(np.abs(g - p) / g),
                "sq_rel": np.mean((g - p) ** 2 / g),
                "rmse": np.sqrt(np.mean((g - p) ** 2)),
                "log_rmse": np.sqrt(np.mean((np.log(g) - np.log(p)) ** 2)),
                "delta1": np.mean(thresh < 1.25),
                "delta2": np.mean(thresh < 1.25**2),
                "delta3": np.mean(thresh < 1.25**3),
            }
        )
    return {k: float(np.mean([row[k] for row in rows])) for k in KEYS}


def imperfect_depth_pairs(seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    pairs = []
    for n_rows in (5, 40, 12, 6):  # images with very different numbers of valid pixels
        gt = np.round(rng.uniform(0.5, 100.0, size=(n_rows, 30)) * 256) / 256  # beyond 80 m: not evaluated
        gt[rng.random(gt.shape) < 0.5] = 0.0
        pred = gt * rng.lognormal(0.0, 0.3, size=gt.shape) + rng.uniform(-2, 2, size=gt.shape)
        pred[rng.random(gt.shape) < 0.05] = 300.0  # clipped to 80 m
        pred[rng.random(gt.shape) < 0.05] = 0.0  # clipped to 1e-3 m
        pairs.append((pred.astype(np.float32), gt.astype(np.float32)))
    pairs.append((np.ones((4, 4), np.float32), np.zeros((4, 4), np.float32)))  # no valid pixel: not counted
    return pairs


def test_depth_metric_matches_numpy_per_image_averages_on_imperfect_predictions():
    pairs = imperfect_depth_pairs()
    metric = create_task("depth").metric()
    for pred, gt in pairs:
        metric.update(pred, gt)
    values = metric.compute()
    assert list(values) == list(KEYS)
    expected = numpy_depth_metrics(pairs, 1e-3, 80.0)
    for k in KEYS:
        assert values[k] == pytest.approx(expected[k], rel=1e-12), k
    assert 0.05 < values["abs_rel"] < 1.0 and 0.0 < values["delta1"] < 1.0
    # Per image, not per pixel: pooling the pixels of every image gives another number.
    pooled = numpy_depth_metrics(
        [(np.concatenate([p.ravel() for p, _ in pairs]), np.concatenate([g.ravel() for _, g in pairs]))], 1e-3, 80.0
    )
    assert abs(pooled["abs_rel"] - values["abs_rel"]) > 1e-3


def test_depth_metrics_merged_from_halves_equal_one_metric_on_everything_exactly():
    pairs = imperfect_depth_pairs(1) + imperfect_depth_pairs(2)
    whole, first, second = (DepthMetric(1e-3, 80.0) for _ in range(3))
    for i, (pred, gt) in enumerate(pairs):
        whole.update(pred, gt)
        (first if i % 2 else second).update(pred, gt)
    second.merge(first)  # the other order than the single pass: fsum makes it exact anyway
    assert second.compute() == whole.compute()


def test_depth_metric_refuses_a_prediction_of_another_size_and_is_nan_when_empty():
    metric = DepthMetric(1e-3, 80.0)
    with pytest.raises(ValueError, match="prediction is"):
        metric.update(np.ones((3, 4)), np.ones((4, 3)))
    assert all(math.isnan(v) for v in metric.compute().values())


# ---- export ----------------------------------------------------------------------------------


def test_depth_predictions_round_trip_through_kitti_pngs(real_shards, tmp_path):
    task = create_task("depth")
    shards = ShardSet.open(real_shards)
    rng = np.random.default_rng(4)
    samples = [shards.read_sample(key) for key in KITTI]
    # multiples of 1/256 m below 256 m: exact in the format
    written = {s.key: (rng.integers(1, 65536, size=s.size) / 256.0).astype(np.float32) for s in samples}
    write_task_predictions(task, tmp_path, written, samples)
    assert task.holds_predictions(tmp_path)
    back = task.read_predictions(tmp_path)
    assert back.keys() == written.keys()
    for key in KITTI:
        assert back[key].dtype == np.float32
        np.testing.assert_array_equal(back[key], written[key])


def test_depth_png_values_are_metres_times_256_with_zero_kept_for_none():
    metres = np.array([[0.0, 1e-4, 1.0, 12.3456, 400.0]])
    assert metres_to_png(metres).tolist() == [[0, 1, 256, round(12.3456 * 256), 65535]]
    with pytest.raises(ValueError, match="NaN"):
        metres_to_png(np.array([[np.nan]]))


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"\x89PNG\r\n\x1a\n but then nothing", "not a PNG"),
        (cv2.imencode(".png", np.zeros((4, 4), np.uint8))[1].tobytes(), "found a 8-bit grey PNG"),
        (cv2.imencode(".png", np.zeros((4, 4, 3), np.uint16))[1].tobytes(), "found a 16-bit RGB PNG"),
    ],
)
def test_reading_a_malformed_depth_png_names_the_file(tmp_path, content, says):
    path = tmp_path / "depth" / "kitti_train_000000.png"
    message = prediction_read_error(create_task("depth"), tmp_path, path, content)
    assert str(path) in message and says in message and "16-bit" in message and "\n" not in message
