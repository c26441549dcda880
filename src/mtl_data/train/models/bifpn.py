"""BiFPN neck as the thesis used it (Tan et al. 2020, "EfficientDet: Scalable and Efficient
Object Detection"; the Tartu thesis, section 3.3 and Figure 3.6).

EfficientDet runs BiFPN on P3..P7 of an EfficientNet; the thesis runs it on the four ResNet
stages, **P2..P5 (strides 4..32)**, 256 channels, and hands each output level to the heads:

1. **Inputs**: every encoder map is brought to ``out_channels`` by a depthwise-separable
   convolution (3x3 depthwise, 1x1 pointwise) + BatchNorm, as the thesis says ("depthwise
   separable convolution operations were applied to all four feature maps with an output
   channel size of 256"); no activation, as EfficientDet's input resampling.
2. **Top-down** (coarse to fine): ``P_i^td = Node(P_i^in, Up(P_{i+1}^td))`` with
   ``P_top^td = P_top^in``; the finest td node is the finest output.
3. **Bottom-up** (fine to coarse): ``P_i^out = Node(P_i^in, P_i^td, Down(P_{i-1}^out))``, and
   ``Node(P_top^in, Down(P_{top-1}^out))`` at the coarsest level.

``Node`` is **fast normalized fusion** (EfficientDet section 3.3): ``O = sum_i w_i I_i`` with
``w_i = relu(v_i) / (sum_j relu(v_j) + 1e-4)`` over learnable ``v`` initialised to ones, then a
depthwise-separable convolution + BatchNorm + activation. ``Up`` is nearest-neighbour
interpolation to the finer map's size; ``Down`` is a 3x3 max pool with stride 2 and padding 1
(EfficientDet's; it halves with ceil rounding as the ResNet's strided convolutions do, so the
sizes match for any input). The thesis's figure caption describes both resamplings as
"interpolation"; its code is not available to check, so EfficientDet's pooling is kept.
The layer is repeated ``repeats`` times (EfficientDet-D0: 3; the thesis: 1, the default).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mtl_data.errors import MtlDataError
from mtl_data.train.models.base import Neck
from mtl_data.train.models.registry import register_neck

#: activations a fusion node may use: EfficientDet's swish (SiLU) or ReLU.
ACTIVATIONS: dict[str, type[nn.Module]] = {"silu": nn.SiLU, "relu": nn.ReLU}


@dataclass(frozen=True)
class BiFPNConfig:
    """Options of the BiFPN neck.

    Attributes:
        repeats: BiFPN layers stacked (weights not shared); at least 1.
        activation: after each fusion node's conv + BN, one of ``ACTIVATIONS``.
        eps: the fusion's epsilon (EfficientDet: 1e-4), which keeps the division finite when
            every weight is at or below zero.
    """

    repeats: int = 1
    activation: str = "silu"
    eps: float = 1e-4

    def __post_init__(self) -> None:
        if self.repeats < 1:
            raise MtlDataError(f"bifpn: repeats must be at least 1, got {self.repeats}")
        if self.activation not in ACTIVATIONS:
            raise MtlDataError(f"bifpn: unknown activation {self.activation!r}; choose from {', '.join(ACTIVATIONS)}")
        if self.eps <= 0:
            raise MtlDataError(f"bifpn: eps must be positive, got {self.eps}")


class SeparableConv(nn.Module):
    """Depthwise 3x3 then pointwise 1x1 convolution, BatchNorm, optional activation.

    The pointwise conv has no bias: the BatchNorm after it has one.
    """

    def __init__(self, in_channels: int, out_channels: int, activation: type[nn.Module] | None):
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = nn.Identity() if activation is None else activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.pointwise(self.depthwise(x))))  # (B, out, H, W)


class FastNormalizedFusion(nn.Module):
    """``sum_i w_i x_i`` with ``w = relu(v) / (sum relu(v) + eps)`` (Tan et al. 2020, eq. 3).

    ReLU keeps every weight non-negative; the normalisation bounds the output by the largest
    input without the cost of a softmax.
    """

    def __init__(self, inputs: int, eps: float = 1e-4):
        super().__init__()
        # Ones: every input counts the same at the start (EfficientDet's initialisation). The
        # thesis code left them uninitialised, so they started as whatever memory held
        # (possibly huge, negative or NaN) and a run depended on the allocator.
        self.weight = nn.Parameter(torch.ones(inputs))
        self.eps = eps

    def normalized_weights(self) -> torch.Tensor:
        """The weights the inputs are multiplied by, (inputs,)."""
        w = F.relu(self.weight)
        return w / (w.sum() + self.eps)

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        w = self.normalized_weights()  # (N,)
        out = w[0] * inputs[0]  # (B, C, H, W)
        for i in range(1, len(inputs)):
            out = out + w[i] * inputs[i]
        return out


class FusionNode(nn.Module):
    """Fast normalized fusion of same-sized maps, then separable conv + BN + activation."""

    def __init__(self, inputs: int, channels: int, activation: type[nn.Module], eps: float):
        super().__init__()
        self.fusion = FastNormalizedFusion(inputs, eps)
        self.conv = SeparableConv(channels, channels, activation)

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return self.conv(self.fusion(inputs))  # (B, C, H, W)


class BiFPNLayer(nn.Module):
    """One top-down + bottom-up pass over ``levels`` maps of ``channels`` (module docstring).

    ``top_down[i]`` is the node of level i (0 = finest, levels-2 the coarsest with one),
    ``bottom_up[i - 1]`` that of level i (1..levels-1).
    """

    def __init__(self, levels: int, channels: int, activation: type[nn.Module], eps: float):
        super().__init__()
        self.top_down = nn.ModuleList(FusionNode(2, channels, activation, eps) for _ in range(levels - 1))
        self.bottom_up = nn.ModuleList(
            FusionNode(3 if i < levels - 1 else 2, channels, activation, eps) for i in range(1, levels)
        )

    def forward(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        """``inputs[i]`` (B, C, H_i, W_i), finest first -> as many maps, same shapes."""
        levels = len(inputs)
        td = list(inputs)  # td[top] is the coarsest input itself
        for i in range(levels - 2, -1, -1):
            up = F.interpolate(td[i + 1], size=inputs[i].shape[-2:], mode="nearest")  # (B, C, H_i, W_i)
            td[i] = self.top_down[i]([inputs[i], up])
        out = [td[0]]
        for i in range(1, levels):
            down = F.max_pool2d(out[i - 1], kernel_size=3, stride=2, padding=1)  # (B, C, H_i, W_i)
            fused = [inputs[i], td[i], down] if i < levels - 1 else [inputs[i], down]
            out.append(self.bottom_up[i - 1](fused))
        return out


@register_neck("bifpn", config=BiFPNConfig)
class BiFPN(Neck):
    """Input projections + ``repeats`` BiFPN layers (module docstring)."""

    def __init__(self, in_channels: tuple[int, ...], out_channels: int, config: BiFPNConfig = BiFPNConfig()):
        super().__init__()
        self.in_channels = tuple(in_channels)
        self.out_channels = out_channels
        self.config = config
        self.inputs = nn.ModuleList(SeparableConv(c, out_channels, None) for c in self.in_channels)
        activation = ACTIVATIONS[config.activation]
        self.layers = nn.ModuleList(
            BiFPNLayer(len(self.in_channels), out_channels, activation, config.eps) for _ in range(config.repeats)
        )

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """``features[i]`` (B, in_channels[i], H_i, W_i) -> (B, out_channels, H_i, W_i) each."""
        maps = [conv(f) for conv, f in zip(self.inputs, features, strict=True)]  # each (B, D, H_i, W_i)
        for layer in self.layers:
            maps = layer(maps)
        return maps
