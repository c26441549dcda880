"""Axis-aligned box operations in torch: IoU and (class-wise) non-maximum suppression.

Boxes are ``[x1, y1, x2, y2]`` with ``x1 <= x2`` and ``y1 <= y2`` in any one pixel frame; area
is ``(x2 - x1) * (y2 - y1)`` (continuous extents, no "+1" as in the old VOC convention), so the
pixel-centre boxes of ``schema.sample.Det2D`` and COCO's ``[x, y, w, h]`` with ``w = x2 - x1``
give the same IoU. Every function runs on the device of its inputs (CPU or CUDA).

Non-maximum suppression has torchvision's semantics (``torchvision.ops.nms``, the greedy NMS
of Felzenszwalb et al. 2010 as used by R-CNN, Girshick et al. 2014): visit boxes by decreasing
score, keep a box unless a kept box overlaps it with IoU **strictly greater** than the
threshold, return the kept indices by decreasing score. Two details, stated because they decide
results:

* **Ties** in score are visited in index order (a stable sort), so the result is deterministic,
  as in torchvision's current CPU and CUDA kernels (``scores.sort(stable=true)``; older releases
  sorted without a stability guarantee).
* **Zero union** (two degenerate boxes): IoU is 0, never 0/0 = NaN. torchvision's ``box_iou``
  gives NaN there, which its NMS compares as "not greater", so suppression agrees.

The greedy pass is sequential by nature. As torchvision's CUDA kernel does, the suppression
matrix is computed on the device in one batched step and the pass over it runs on the host,
touching only the rows of kept boxes: O(N^2) device work, O(K N) host work for K kept boxes,
one device-to-host copy per call (per class in ``batched_nms``). The number of kept boxes depends on the data, so a host
synchronization is unavoidable anyway (torchvision's ``nms`` has one too).
"""

from __future__ import annotations

import numpy as np
import torch


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Areas (N,) of boxes (N, 4) ``[x1, y1, x2, y2]``."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])  # (N,)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Intersection over union of every pair: (N, M) for boxes a (N, 4) and b (M, 4).

    0 where the union is 0 (two degenerate boxes) or the boxes do not overlap.
    """
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])  # (N, M, 2)
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])  # (N, M, 2)
    wh = (rb - lt).clamp(min=0)  # (N, M, 2)
    inter = wh[..., 0] * wh[..., 1]  # (N, M)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter  # (N, M)
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny), torch.zeros_like(inter))


def _greedy(boxes: torch.Tensor, scores: torch.Tensor, iou: float) -> torch.Tensor:
    order = torch.sort(scores, descending=True, stable=True).indices  # (N,) ties in index order
    sorted_boxes = boxes[order]  # (N, 4)
    # rows[i, j]: box i, if kept, removes box j. Entries j <= i (the diagonal included) mark boxes
    # already visited, so they change nothing and need no masking.
    rows = (box_iou(sorted_boxes, sorted_boxes) > iou).cpu().numpy()  # (N, N) bool, the one copy to the host
    removed = np.zeros(len(rows), dtype=bool)
    kept = []
    for i in range(len(rows)):
        if not removed[i]:
            kept.append(i)
            removed |= rows[i]
    return order[torch.as_tensor(kept, dtype=torch.long, device=order.device)]


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou: float) -> torch.Tensor:
    """Greedy non-maximum suppression (module docstring).

    Args:
        boxes: (N, 4) ``[x1, y1, x2, y2]``.
        scores: (N,) scores; higher is better.
        iou: a box is removed when a kept, higher-scored box overlaps it with IoU > ``iou``.

    Returns:
        (K,) int64 indices into ``boxes`` of the kept boxes, by decreasing score (ties: index order).
    """
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    return _greedy(boxes, scores, iou)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, iou: float) -> torch.Tensor:
    """Class-wise ``nms``: boxes only suppress boxes of their own class.

    One ``nms`` per class present, then the kept boxes of all classes ordered by decreasing score
    (ties: index order), which equals one greedy pass over all boxes where only same-class pairs
    suppress. Per class rather than torchvision's trick of offsetting each class's coordinates
    into a disjoint range: the offsets add rounding to the IoUs of large coordinates, and the
    IoU matrices per class are C times smaller than one over all boxes (C classes of similar size).

    Args:
        boxes: (N, 4) ``[x1, y1, x2, y2]``.
        scores: (N,) scores.
        classes: (N,) integer class of each box.
        iou: the suppression threshold (see ``nms``).

    Returns:
        (K,) int64 indices of the kept boxes over all classes, by decreasing score (ties: index order).
    """
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    keep = torch.zeros(boxes.shape[0], dtype=torch.bool, device=boxes.device)  # (N,)
    for cls in torch.unique(classes).tolist():
        members = torch.nonzero(classes == cls).squeeze(1)  # (n_c,) in index order
        keep[members[_greedy(boxes[members], scores[members], iou)]] = True
    kept = torch.nonzero(keep).squeeze(1)  # (K,) in index order
    return kept[torch.sort(scores[kept], descending=True, stable=True).indices]
