"""Box IoU and (class-wise) NMS of ``train/ops/boxes.py`` against brute-force Python references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtl_data.train.ops import batched_nms, box_iou, nms

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


# ---- brute-force references (plain Python floats, the same arithmetic order) ---------------------


def ref_iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def ref_nms(boxes, scores, iou, classes=None) -> list[int]:
    """Greedy NMS as torchvision defines it, ties in score visited in index order."""
    classes = [0] * len(boxes) if classes is None else classes
    order = sorted(range(len(boxes)), key=lambda i: (-scores[i], i))
    kept: list[int] = []
    for i in order:
        if all(classes[k] != classes[i] or ref_iou(boxes[k], boxes[i]) <= iou for k in kept):
            kept.append(i)
    return kept


def random_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    """n boxes in a 100x100 image, in a few clusters of jittered copies (so that suppression
    chains form); some degenerate (zero width or height, a point) and an exact duplicate."""
    clusters = rng.integers(1, 6)
    which = rng.integers(0, clusters, size=n)
    centres = rng.uniform(20, 80, size=(clusters, 2))[which] + rng.normal(0, 3, size=(n, 2))
    sizes = rng.uniform(5, 30, size=(clusters, 2))[which] * rng.uniform(0.7, 1.3, size=(n, 2))
    boxes = np.column_stack([centres - sizes / 2, centres + sizes / 2])
    degenerate = rng.random(n) < 0.1
    boxes[degenerate, 2] = boxes[degenerate, 0]
    flat = rng.random(n) < 0.05
    boxes[flat, 3] = boxes[flat, 1]
    if n > 4:
        boxes[1] = boxes[0]  # an exact duplicate: IoU 1
        boxes[3, 2:] = boxes[3, :2]  # a point
    return boxes


# ---- box_iou ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_box_iou_equals_the_reference_bit_for_bit_including_degenerate_boxes(device):
    rng = np.random.default_rng(0)
    a, b = random_boxes(rng, 40), random_boxes(rng, 30)
    got = box_iou(torch.tensor(a, device=device), torch.tensor(b, device=device)).cpu().numpy()
    expected = np.array([[ref_iou(x, y) for y in b.tolist()] for x in a.tolist()])
    assert got.shape == (40, 30)
    np.testing.assert_array_equal(got, expected)
    assert np.isfinite(got).all() and got.min() >= 0 and got.max() <= 1


def test_box_iou_of_hand_computed_pairs():
    a = torch.tensor([[0.0, 0.0, 2.0, 1.0], [0.0, 0.0, 1.0, 1.0], [5.0, 5.0, 5.0, 7.0]], dtype=torch.float64)
    b = torch.tensor([[0.0, 0.0, 1.0, 1.0], [1.0, 0.0, 3.0, 1.0], [5.0, 5.0, 5.0, 7.0]], dtype=torch.float64)
    expected = [
        [0.5, 1 / 3, 0.0],  # half of a; a and b[1] share [1, 2] x [0, 1]: 1 / (2 + 2 - 1)
        [1.0, 0.0, 0.0],  # touching edges do not overlap
        [0.0, 0.0, 0.0],
    ]  # two identical zero-area boxes: union 0 -> 0, not NaN
    np.testing.assert_array_equal(box_iou(a, b).numpy(), expected)


def test_box_iou_of_empty_inputs_has_the_empty_shape():
    assert box_iou(torch.zeros(0, 4), torch.zeros(3, 4)).shape == (0, 3)
    assert box_iou(torch.zeros(2, 4), torch.zeros(0, 4)).shape == (2, 0)


# ---- nms -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_nms_equals_the_brute_force_reference_on_random_boxes_with_tied_scores(device, seed, threshold):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 120))
    boxes = random_boxes(rng, n)
    scores = rng.choice([0.1, 0.25, 0.5, 0.75, 0.9], size=n)  # many ties
    got = nms(torch.tensor(boxes, device=device), torch.tensor(scores, device=device), threshold)
    assert got.dtype == torch.int64 and got.device.type == device
    assert got.cpu().tolist() == ref_nms(boxes.tolist(), scores.tolist(), threshold)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", range(6))
def test_batched_nms_equals_nms_per_class_and_the_reference(device, seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(5, 150))
    boxes = random_boxes(rng, n) * 50  # large coordinates: an offset trick would round here
    scores = rng.choice([0.2, 0.4, 0.6, 0.8], size=n)
    classes = rng.integers(0, 4, size=n)
    got = (
        batched_nms(
            torch.tensor(boxes, device=device),
            torch.tensor(scores, device=device),
            torch.tensor(classes, device=device),
            0.5,
        )
        .cpu()
        .tolist()
    )
    assert got == ref_nms(boxes.tolist(), scores.tolist(), 0.5, classes.tolist())
    t_boxes, t_scores = torch.tensor(boxes), torch.tensor(scores)
    per_class = set()
    for k in np.unique(classes):
        idx = np.flatnonzero(classes == k)
        per_class |= set(idx[nms(t_boxes[idx], t_scores[idx], 0.5).numpy()].tolist())
    assert set(got) == per_class
    assert scores[got].tolist() == sorted(scores[got].tolist(), reverse=True)


def test_nms_keeps_the_higher_score_and_suppresses_only_strictly_above_the_threshold():
    boxes = torch.tensor(
        [
            [0.0, 0.0, 1.0, 1.0],  # IoU with box 1: 0.5 exactly -> kept at 0.5
            [0.0, 0.0, 2.0, 1.0],
            [0.0, 0.0, 2.0, 1.0],
        ],
        dtype=torch.float64,
    )  # duplicate of 1, lower score
    scores = torch.tensor([0.3, 0.9, 0.8], dtype=torch.float64)
    assert nms(boxes, scores, 0.5).tolist() == [1, 0]
    assert nms(boxes, scores, 0.49).tolist() == [1]


def test_nms_breaks_score_ties_by_index_order():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 3 + [[50.0, 50.0, 60.0, 60.0]] * 2)
    scores = torch.tensor([0.5, 0.5, 0.5, 0.7, 0.7])
    assert nms(boxes, scores, 0.5).tolist() == [3, 0]


def test_nms_of_degenerate_boxes_keeps_them_all():
    # zero-area boxes have IoU 0 with everything, so nothing suppresses them (torchvision: NaN > t is False)
    boxes = torch.tensor([[1.0, 1.0, 1.0, 5.0], [1.0, 1.0, 1.0, 5.0], [2.0, 2.0, 2.0, 2.0]])
    assert nms(boxes, torch.tensor([0.1, 0.2, 0.3]), 0.5).tolist() == [2, 1, 0]


def test_nms_of_empty_input_is_empty():
    for fn, extra in ((nms, ()), (batched_nms, (torch.zeros(0, dtype=torch.long),))):
        args = (torch.zeros(0, 4), torch.zeros(0)) if fn is nms else (torch.zeros(0, 4), torch.zeros(0), *extra)
        got = fn(*args, 0.5)
        assert got.shape == (0,) and got.dtype == torch.int64
