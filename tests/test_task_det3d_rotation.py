"""det3d's full rotation: the multi-bin encoding of alpha, pitch and roll (Mousavian et al. 2017, in
MonoDLE's form, Ma et al. 2021), its loss on hand values, the round trip of known angles through
targets and decoding, and no pitch/roll signal from yaw-only sources (KITTI).

The detection score with predicted pitch and roll against cityscapesScripts is in
``test_task_det3d.py`` (``test_detection_score_with_predicted_pitch_and_roll_equals_cityscapesscripts``),
next to the other oracle tests it shares its scenario with."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import batch_from_shards, det3d_perfect_output, monodle_angle2class, random_features

from mtl_data.errors import MtlDataError
from mtl_data.schema import geometry as geo
from mtl_data.train.tasks import FeatureSpec, create_task
from mtl_data.train.tasks.det3d import (
    UPRIGHT_PRIOR,
    angle_to_bin,
    decode_multibin,
    multibin_loss,
    multibin_targets,
)

CITY_KEY = "cityscapes_val_lindau_000000_000019"
KITTI_KEYS = ["kitti_train_000000", "kitti_train_000001"]
SIZE = (128, 256)


def _wrapped(a: np.ndarray) -> np.ndarray:
    """Angles in [-pi, pi)."""
    return np.mod(a + np.pi, 2 * np.pi) - np.pi


# ---- the encoding --------------------------------------------------------------------------------


@pytest.mark.parametrize("bins", [1, 2, 4, 12])
def test_angle_bins_are_monodle_s_and_decode_back_exactly(bins):
    rng = np.random.default_rng(bins)
    step = 2 * np.pi / bins
    edges = np.array([k * step + step / 2 + d for k in range(bins) for d in (-1e-9, 1e-9)])
    angles = np.concatenate([rng.uniform(-10, 10, 1000), edges, [-np.pi, np.pi, 0.0, -1e-12]])
    index, residual = angle_to_bin(torch.from_numpy(angles), bins)
    expected = [monodle_angle2class(float(a), bins) for a in angles[:1000]]
    assert index[:1000].tolist() == [k for k, _ in expected]
    np.testing.assert_allclose(residual[:1000].numpy(), [r for _, r in expected], atol=1e-12)
    assert index.min() >= 0 and index.max() < bins and residual.abs().max() <= step / 2 + 1e-9
    # targets: one-hot of the bin, then the residual in that bin's channel
    t = multibin_targets(torch.from_numpy(angles)[:, None], bins)  # (N, 2 n)
    assert t.shape == (len(angles), 2 * bins)
    assert torch.equal(t[:, :bins], torch.nn.functional.one_hot(index, bins).double())
    np.testing.assert_array_equal(t[:, bins:].sum(1).numpy(), residual.numpy())
    decoded = decode_multibin(t.numpy(), bins)[:, 0]
    assert np.all((decoded >= -np.pi) & (decoded < np.pi))
    np.testing.assert_allclose(_wrapped(decoded - angles), 0.0, atol=1e-12)


def test_decoding_error_is_the_residual_error_in_the_right_bin_and_at_most_1_5_bins_in_a_neighbour():
    bins, rng = 12, np.random.default_rng(0)
    step = 2 * np.pi / bins
    angles = rng.uniform(-np.pi, np.pi, (500, 3))  # alpha, pitch, roll per row
    t = multibin_targets(torch.from_numpy(angles), bins).numpy().reshape(500, 3, 2, bins)
    index = t[:, :, 0].argmax(-1)  # (500, 3)
    out = t.copy()
    out[:, :, 0] += rng.uniform(-0.45, 0.45, out[:, :, 0].shape)  # logits: the true bin stays on top
    delta = rng.uniform(-0.1, 0.1, (500, 3))
    np.put_along_axis(
        out[:, :, 1],
        index[..., None],
        (np.take_along_axis(t[:, :, 1], index[..., None], -1)[..., 0] + delta)[..., None],
        -1,
    )
    decoded = decode_multibin(out.reshape(500, -1), bins)
    np.testing.assert_allclose(_wrapped(decoded - angles), delta, atol=1e-12)
    # the neighbouring bin wins: its centre (its residual channel holds 0), at most 1.5 bins away
    np.put_along_axis(out[:, :, 0], ((index + 1) % bins)[..., None], 5.0, -1)
    error = np.abs(_wrapped(decode_multibin(out.reshape(500, -1), bins) - angles))
    assert np.all(error <= 1.5 * step + 1e-12) and np.all(error >= 0.5 * step - 1e-12)


def _one_box_batch(specs: list[tuple[float, float, float, float]], full: bool = True) -> dict:
    """One sample per spec ``(x, yaw, pitch, roll)``: a car at (x, 1, 12) m with that rotation, on a
    64x128 image (K: f = 100 px, centre (63.5, 31.5)), stored at that size, not flipped."""
    b = len(specs)
    boxes = torch.zeros(b, 2, 7)
    rotation = torch.zeros(b, 2, 3, 3)
    for i, (x, yaw, pitch, roll) in enumerate(specs):
        R = geo.yaw_pitch_roll_to_rotation(yaw, pitch, roll)
        boxes[i, 0] = torch.tensor([x, 1.0, 12.0, 4.2, 1.8, 1.5, math.atan2(R[0, 2], R[0, 0])])
        rotation[i, 0] = torch.from_numpy(R)
    return {
        "key": [f"synthetic_val_{i}" for i in range(b)],
        "image": torch.zeros(b, 3, 64, 128),
        "K": torch.tensor([[100.0, 0.0, 63.5], [0.0, 100.0, 31.5], [0.0, 0.0, 1.0]]).expand(b, 3, 3).clone(),
        "K_known": torch.ones(b, dtype=torch.bool),
        "det3d_boxes": boxes,
        "det3d_classes": torch.tensor([[0, -1]] * b),
        "det3d_count": torch.ones(b, dtype=torch.int64),
        "det3d_rotation": rotation,
        "det3d_full": torch.tensor([[full, False]] * b),
        "size": torch.tensor([[64, 128]] * b),
        "scale": torch.ones(b, 2),
        "offset": torch.zeros(b, 2),
        "flipped": torch.zeros(b, dtype=torch.bool),
    }


#: (x, yaw, pitch, roll): yaw across the circle (both sides of +-pi), pitch and roll from the small
#: ones of real roads to ones in other bins than 0 (12 bins: |angle| > 15 degrees)
_ROTATIONS = [
    (0.0, 0.7, 0.05, -0.08),
    (-2.0, 3.12, -0.03, 0.02),
    (2.5, -3.13, 0.4, -0.5),
    (1.0, -1.6, -0.6, 0.3),
    (-1.5, 1.5708, 0.0, 2.9),
    (0.5, -0.2618, 0.2618, -0.2618),  # bin edges of 12 bins
]


@pytest.mark.parametrize("bins", [2, 12])
def test_boxes_with_known_yaw_pitch_roll_round_trip_through_targets_and_decoding(bins):
    task = create_task("det3d", heading_bins=bins)
    batch = _one_box_batch(_ROTATIONS)
    preds = task.decode(det3d_perfect_output(task, batch), batch)
    for pred, (x, yaw, pitch, roll) in zip(preds, _ROTATIONS):
        assert len(pred) == 1 and pred.scores[0] > 0.99
        np.testing.assert_allclose(pred.boxes[0, :3], [x, 1.0, 12.0], atol=1e-4)
        np.testing.assert_allclose(pred.rotation[0], geo.yaw_pitch_roll_to_rotation(yaw, pitch, roll), atol=2e-6)
        got = np.array(geo.rotation_to_yaw_pitch_roll(pred.rotation[0]), dtype=np.float64)
        np.testing.assert_allclose(_wrapped(got - [yaw, pitch, roll]), 0.0, atol=2e-6)


def test_a_sample_whose_peaks_all_fall_below_the_threshold_decodes_to_no_boxes():
    # every peak dropped leaves zero rows for the angle decoder (make demo's first evaluation hit it)
    assert decode_multibin(np.zeros((0, 2 * 3 * 12)), 12).shape == (0, 3)
    task = create_task("det3d")
    batch = _one_box_batch(_ROTATIONS[:1])
    output = det3d_perfect_output(task, batch)
    output["heatmap"] = torch.full_like(output["heatmap"], -20.0)  # sigmoid ~2e-9 everywhere
    (pred,) = task.decode(output, batch)
    assert len(pred) == 0 and pred.boxes.shape[0] == 0 and pred.rotation.shape[0] == 0


# ---- the loss on hand values --------------------------------------------------------------------


def test_pitch_and_roll_loss_on_hand_values():
    """4 bins (centres 0, pi/2, pi, 3 pi/2). Sample 0: a truck at (0.5, 0.75, 8) (cell (5, 9) of the
    8x16 map) with the source's rotation yaw 0.7, pitch 0.9 (bin 1, residual 0.9 - pi/2), roll -2.0
    (bin 3, residual -2.0 + pi/2), and a KITTI car at (-2, 0.7, 6) (cell (6, 1)). Sample 1: the
    KITTI car alone. Pitch logits (0.5, 1, -1, 0), residuals (0.3, -0.6, 0.1, 0.2); roll logits
    (2, 0, 0, 1), residuals (0, 0, 0, -0.5):
    loss = [log(e^0.5 + e + e^-1 + 1) - 1 + |-0.6 - (0.9 - pi/2)|]
         + [log(e^2 + 2 + e) - 1 + |-0.5 - (-2 + pi/2)|]; the KITTI rows add nothing."""
    task = create_task(
        "det3d",
        heading_bins=4,
        **{f"weight_{n}": float(n == "pitch_roll") for n in ("heatmap", "offset", "depth", "size", "orientation")},
    )
    tilted = geo.yaw_pitch_roll_to_rotation(0.7, 0.9, -2.0)
    boxes = torch.zeros(2, 2, 7)
    boxes[0, 0] = torch.tensor([0.5, 0.75, 8.0, 8.0, 2.5, 3.2, math.atan2(tilted[0, 2], tilted[0, 0])])
    boxes[0, 1] = boxes[1, 0] = torch.tensor([-2.0, 0.7, 6.0, 4.0, 1.8, 1.5, 0.3])
    rotation = torch.from_numpy(np.stack([geo.yaw_to_rotation(0.3)] * 4).reshape(2, 2, 3, 3)).float()
    rotation[0, 0] = torch.from_numpy(tilted)
    batch = {
        "image": torch.zeros(2, 3, 32, 64),
        "K": torch.tensor([[80.0, 0.0, 31.5], [0.0, 80.0, 15.5], [0.0, 0.0, 1.0]]).expand(2, 3, 3).clone(),
        "K_known": torch.tensor([True, True]),
        "det3d_boxes": boxes,
        "det3d_classes": torch.tensor([[2, 0], [0, -1]]),
        "det3d_count": torch.tensor([2, 1]),
        "det3d_rotation": rotation,
        "det3d_full": torch.tensor([[True, False], [False, False]]),
    }
    t = task.targets(batch, (8, 16))
    assert t.index[0].tolist() == [5 * 16 + 9, 6 * 16 + 1] and t.full.tolist() == [[True, False], [False, False]]
    half = math.pi / 2
    expected_target = [0, 1, 0, 0, 0, 0.9 - half, 0, 0, 0, 0, 0, 1, 0, 0, 0, -2.0 + half]
    np.testing.assert_allclose(t.pitch_roll[0, 0].numpy(), expected_target, atol=1e-6)
    assert not t.pitch_roll[0, 1].any() and not t.pitch_roll[1].any()

    gen = torch.Generator().manual_seed(0)
    output = {
        name: 10 * torch.randn(2, c, 8, 16, generator=gen)  # junk everywhere, the KITTI cells included
        for name, c in {"heatmap": task.num_classes, "offset": 2, "depth": 1, "size": 3, "orientation": 8}.items()
    }
    output["pitch_roll"] = 10 * torch.randn(2, 16, 8, 16, generator=gen)
    output["pitch_roll"][0, :, 5, 9] = torch.tensor(
        [0.5, 1.0, -1.0, 0.0, 0.3, -0.6, 0.1, 0.2, 2.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -0.5]
    )
    e = math.e
    pitch = math.log(e**0.5 + e + 1 / e + 1) - 1 + abs(-0.6 - (0.9 - half))
    roll = math.log(e**2 + 2 + e) - 1 + abs(-0.5 - (-2.0 + half))
    loss = task.loss(output, batch)
    assert float(loss[0]) == pytest.approx(pitch + roll, abs=1e-6)
    assert float(loss[1]) == 0.0


def test_multibin_loss_of_a_row_of_zero_targets_is_zero_and_of_a_perfect_row_its_cross_entropy():
    pred = torch.randn(5, 3 * 2 * 6, dtype=torch.float64)
    assert torch.equal(multibin_loss(pred, torch.zeros_like(pred), 6), torch.zeros(5, dtype=torch.float64))
    angles = torch.rand(5, 3, dtype=torch.float64) * 6 - 3
    target = multibin_targets(angles, 6)  # (5, 36)
    perfect = target.clone()
    logits = target.view(5, 3, 2, 6)[:, :, 0] * 4.0  # (5, 3, 6): the true bin 4 above the rest
    perfect.view(5, 3, 2, 6)[:, :, 0] = logits
    torch.testing.assert_close(
        multibin_loss(perfect, target, 6), 3 * torch.full((5,), math.log(math.exp(4) + 5) - 4, dtype=torch.float64)
    )


# ---- yaw-only sources ---------------------------------------------------------------------------


def test_yaw_only_sources_give_the_pitch_roll_outputs_no_gradient(real_shards):
    """KITTI rows carry pitch = roll = 0 by construction: no pitch/roll loss, a gradient of exactly
    0 on those outputs (and, in a KITTI-only batch, on the whole pitch/roll branch); the
    Cityscapes-3D box's cell gets one."""
    task = create_task("det3d")
    head = task.build_head(FeatureSpec(channels=8))
    batch = batch_from_shards(real_shards, [*KITTI_KEYS, CITY_KEY], SIZE, letterbox=True)
    out = head(random_features(batch), SIZE)
    for name in ("orientation", "pitch_roll"):
        out[name].retain_grad()
    task.batch_loss(out, batch).backward()
    grad = out["pitch_roll"].grad  # (3, 48, 32, 64)
    assert torch.count_nonzero(grad[:2]) == 0
    t = task.targets(batch, (32, 64))
    cell = int(t.index[2, 0])
    assert torch.count_nonzero(grad[2].flatten(1)[:, cell]) > 0
    assert torch.count_nonzero(grad[2].flatten(1)) == torch.count_nonzero(grad[2].flatten(1)[:, cell])
    assert all(torch.count_nonzero(out["orientation"].grad[i]) > 0 for i in range(3))  # yaw trains everywhere

    kitti = batch_from_shards(real_shards, KITTI_KEYS, SIZE, letterbox=True)
    head.zero_grad()
    task.batch_loss(head(random_features(kitti), SIZE), kitti).backward()
    for name, p in head.named_parameters():
        assert (torch.count_nonzero(p.grad) == 0) == name.startswith("branches.pitch_roll."), name


def test_a_model_trained_on_yaw_only_sources_decodes_upright_boxes(real_shards):
    """The pitch/roll branch's last layer starts at zero weights with bin 0 at ``UPRIGHT_PRIOR``:
    AdamW steps on KITTI leave its weights and residual biases at 0 (no gradient; weight decay
    only shrinks the rest of the branch, and bin 0's logit stays the largest), so every decoded
    box has pitch = roll = 0 exactly; a step on a Cityscapes-3D box moves those weights."""
    task = create_task("det3d")
    head = task.build_head(FeatureSpec(channels=8))
    last = head.branches["pitch_roll"][-1]
    assert torch.count_nonzero(last.weight) == 0
    prior = torch.softmax(last.bias.view(2, 2, 12)[:, 0], dim=-1)[:, 0]  # (pitch, roll) bin 0
    torch.testing.assert_close(prior, torch.full((2,), UPRIGHT_PRIOR))
    assert torch.count_nonzero(last.bias.view(2, 2, 12)[:, 1]) == 0  # residuals
    kitti = batch_from_shards(real_shards, KITTI_KEYS, SIZE, letterbox=True)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-2, weight_decay=0.05)
    for step in range(2):
        opt.zero_grad()
        task.batch_loss(head(random_features(kitti, seed=step), SIZE), kitti).backward()
        opt.step()
    assert torch.count_nonzero(last.weight) == 0 and torch.count_nonzero(last.bias.view(2, 2, 12)[:, 1]) == 0
    assert torch.all(last.bias.view(2, 2, 12)[:, 0, 0] > 0)  # bin 0 still ahead of the others (0)
    preds = task.decode(head(random_features(kitti, seed=5), SIZE), kitti)
    rotation = np.concatenate([p.rotation for p in preds])
    assert len(rotation) > 10
    _, pitch, roll = geo.rotation_to_yaw_pitch_roll(rotation)
    assert np.all(pitch == 0) and np.all(roll == 0)

    city = batch_from_shards(real_shards, [CITY_KEY], SIZE, letterbox=True)
    opt.zero_grad()
    task.batch_loss(head(random_features(city), SIZE), city).backward()
    opt.step()
    assert torch.count_nonzero(head.branches["pitch_roll"][-1].weight) > 0


def test_heading_bins_must_be_at_least_one():
    with pytest.raises(MtlDataError, match="heading_bins must be at least 1, got 0"):
        create_task("det3d", heading_bins=0)
