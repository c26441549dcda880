"""Pieces shared by the dense task modules (seg, depth, lane ...): a head and the way back to stored pixels.

* ``feature_index``: which of the neck's maps has a given stride.
* ``DenseHead``: conv3x3-BN-ReLU then conv1x1 on one feature map, upsampled bilinearly to the
  input size; the FCN/DeepLab-style per-pixel classifier (Long et al. 2015, "Fully
  Convolutional Networks for Semantic Segmentation") that every dense task here builds on.
* ``to_stored`` / ``dense_to_stored``: a dense output at the batch's input size -> the stored
  image's pixel grid. The loader placed the stored image (resize or letterbox, ``Placement``),
  then maybe mirrored it (``View``); the inverse un-mirrors the output, crops the letterbox
  content and resizes it to the stored size. Resizing follows the pixel-centre convention of
  ``schema.placement`` (``c' = (c + 0.5) s - 0.5``): that is exactly what ``F.interpolate``
  with ``align_corners=False`` samples, so stored pixel c reads content coordinate
  ``(c + 0.5) s - 0.5``, the point the loader sent it to.

Bilinear is the default for every continuous output (logits, depth): resizing logits and then
taking the argmax gives smoother class borders than resizing an argmax map (the usual
practice of mmsegmentation and the Cityscapes baselines). When the stored image is smaller
than the content on an axis, bilinear is anti-aliased (``antialias=True``), so shrinking
averages instead of skipping pixels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mtl_data.train.data.transforms import View
from mtl_data.train.tasks.base import FeatureSpec, per_sample, view_of

#: ``mode`` values of ``to_stored``.
RESIZE_MODES = ("bilinear", "nearest")


def feature_index(features: FeatureSpec, stride: int, task: str) -> int:
    """Index of the map of ``stride`` in the neck's list (``FeatureSpec.strides``).

    Raises:
        ValueError: the neck has no map of that stride (names the task and the strides it has).
    """
    if stride not in features.strides:
        raise ValueError(
            f"task {task}: its head reads the stride-{stride} map; the neck gives strides "
            f"{', '.join(map(str, features.strides))}"
        )
    return features.strides.index(stride)


class DenseHead(nn.Module):
    """conv3x3-BN-ReLU, conv1x1 to ``out_channels``, bilinear upsampling to the input size.

    ``head(features, image_size)`` reads ``features[index]`` (B, C_in, H / s, W / s) and
    returns (B, out_channels, H, W). Runs the same graph on every batch (no branch on data).

    Args:
        in_channels: channels of the feature map.
        hidden: channels of the 3x3 layer.
        out_channels: channels of the output (classes, 1 for depth ...).
        index: which map of the features list to read (``feature_index``).
    """

    def __init__(self, in_channels: int, hidden: int, out_channels: int, index: int):
        super().__init__()
        self.index = index
        self.conv = nn.Conv2d(in_channels, hidden, 3, padding=1, bias=False)  # BN supplies the bias
        self.bn = nn.BatchNorm2d(hidden)
        self.out = nn.Conv2d(hidden, out_channels, 1)

    def forward(self, features: Sequence[torch.Tensor], image_size: tuple[int, int]) -> torch.Tensor:
        x = features[self.index]  # (B, C_in, H / s, W / s)
        x = self.out(F.relu(self.bn(self.conv(x)), inplace=True))  # (B, out, H / s, W / s)
        return F.interpolate(x, size=tuple(image_size), mode="bilinear", align_corners=False)  # (B, out, H, W)


def to_stored(output: torch.Tensor, view: View, mode: str = "bilinear") -> torch.Tensor:
    """One sample's dense output at the input size -> the stored image's pixels.

    Un-mirror (the flip was applied last, at the input size), crop the letterbox content,
    resize to the stored size (module docstring). Runs on the tensor's device, in float32
    (bf16 logits would tie in the argmax more often).

    Args:
        output: (C, H, W) at the batch's input size.
        view: the sample's ``View`` (``base.view_of``).
        mode: ``bilinear`` (continuous outputs) or ``nearest`` (ids; ``nearest-exact``, the
            pixel-centre nearest neighbour, as the loader resized class maps).

    Returns:
        (C, h, w) float32, (h, w) = the stored size.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"mode {mode!r} is not one of {RESIZE_MODES}")
    pl = view.placement
    if tuple(output.shape[-2:]) != tuple(pl.out_size):
        raise ValueError(f"output is {tuple(output.shape[-2:])}, the view's input size is {pl.out_size}")
    x = output.float()  # (C, H, W)
    if view.flipped:
        x = torch.flip(x, dims=(-1,))  # (C, H, W) as before the mirror
    (nh, nw), (h, w) = pl.content_size, pl.src_size
    x = x[:, pl.top : pl.top + nh, pl.left : pl.left + nw]  # (C, nh, nw) the letterbox content
    if (nh, nw) == (h, w):
        return x.contiguous()
    if mode == "nearest":
        return F.interpolate(x[None], size=(h, w), mode="nearest-exact")[0]  # (C, h, w)
    shrinks = h < nh or w < nw
    return F.interpolate(x[None], size=(h, w), mode="bilinear", align_corners=False, antialias=shrinks)[0]  # (C, h, w)


def dense_to_stored(
    output: torch.Tensor, batch: Mapping[str, Any], mode: str = "bilinear"
) -> list[torch.Tensor | None]:
    """``to_stored`` of every sample of a batch: (C, h_i, w_i) each, None for a dummy slot.

    Args:
        output: (B, C, H, W) dense output of a head.
        batch: the loader's batch (its ``size``/``scale``/``offset``/``flipped``/``key``).
        mode: see ``to_stored``.
    """
    return per_sample(batch, lambda i: to_stored(output[i], view_of(batch, i), mode))  # (C, h, w) each
