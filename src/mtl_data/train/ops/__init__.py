"""Tensor operations shared by the tasks (torch, any device)."""

from mtl_data.train.ops.boxes import batched_nms, box_area, box_iou, nms

__all__ = ["batched_nms", "box_area", "box_iou", "nms"]
