"""Feature Pyramid Network neck (Lin et al. 2017, "Feature Pyramid Networks for Object Detection").

Each encoder map C_i gets a lateral 1x1 convolution to ``out_channels`` (the paper's d = 256);
from the coarsest level down, the merged map above is upsampled by nearest neighbour to the
size of the level below and added to its lateral (the top-down pathway); a 3x3 convolution on
every merged map gives the outputs P_i ("to reduce the aliasing effect of upsampling"). As in
the paper there is no normalisation or non-linearity in the neck. Four levels in, four out
(P2..P5 at strides 4..32; no P6: the heads use strides 4..32).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mtl_data.train.models.base import Neck
from mtl_data.train.models.registry import register_neck


@register_neck("fpn")
class FPN(Neck):
    """FPN over maps of ``in_channels`` (finest first), ``out_channels`` each out.

    Convolutions are initialised as Detectron / torchvision's FPN (Kaiming uniform with a = 1,
    bias 0).
    """

    def __init__(self, in_channels: tuple[int, ...], out_channels: int):
        super().__init__()
        self.in_channels = tuple(in_channels)
        self.out_channels = out_channels
        self.lateral = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in self.in_channels)
        self.output = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in self.in_channels)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.constant_(m.bias, 0)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """``features[i]`` (B, in_channels[i], H_i, W_i) -> P_i (B, out_channels, H_i, W_i)."""
        laterals = [conv(f) for conv, f in zip(self.lateral, features, strict=True)]  # each (B, D, H_i, W_i)
        merged = [laterals[-1]]  # coarsest first while building the top-down pathway
        for lateral in reversed(laterals[:-1]):
            # size= (not scale_factor=2): levels of an odd-sized input differ by ceil, not 2x
            up = F.interpolate(merged[-1], size=lateral.shape[-2:], mode="nearest")  # (B, D, H_i, W_i)
            merged.append(lateral + up)
        merged.reverse()  # finest first
        return [conv(m) for conv, m in zip(self.output, merged, strict=True)]  # each (B, D, H_i, W_i)
