"""ResNet-18/34/50 encoders (He et al. 2016, "Deep Residual Learning for Image Recognition").

Written here in plain torch with **exactly torchvision's parameter and buffer names**
(``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.downsample.0``,
``layer1.0.downsample.1.running_mean``, ...), so that a torchvision ImageNet state dict file the
user has loads strictly (``weights=PATH``; its ``fc.weight``/``fc.bias`` are dropped). Nothing
is downloaded.

``features_only``: no average pool, no ``fc``; ``forward`` returns the outputs of ``layer1`` ..
``layer4``, strides 4, 8, 16, 32 (ResNet's stages conv2_x .. conv5_x), with ``channels`` (64,
128, 256, 512) for the basic-block nets and (256, 512, 1024, 2048) for ResNet-50.

As torchvision: the bottleneck block strides on its 3x3 conv (``conv2``), the "ResNet v1.5"
variant (the paper strides on the first 1x1 conv; v1.5 is what torchvision's weights are);
convolutions have no bias; BatchNorm eps 1e-5, momentum 0.1; initialisation is Kaiming normal
(fan_out, ReLU gain) for convolutions and weight 1, bias 0 for BatchNorm, and optionally
(``zero_init_residual``, off by default as in torchvision) the last BatchNorm of each residual
branch starts at weight 0, so that every block starts as the identity (Goyal et al. 2017).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mtl_data.train.models.base import Encoder
from mtl_data.train.models.registry import register_encoder


@dataclass(frozen=True)
class ResNetConfig:
    """Options of the ResNet encoders.

    Attributes:
        zero_init_residual: start the last BatchNorm of every block at weight 0 (each block is
            the identity at initialisation); off by default, as in torchvision.
    """

    zero_init_residual: bool = False


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions and the identity (ResNet-18/34)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)  # (B, planes, H/s, W/s)
        out = self.relu(self.bn1(self.conv1(x)))  # (B, planes, H/s, W/s)
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided: v1.5), 1x1 expand by 4, and the identity (ResNet-50)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)  # (B, 4 planes, H/s, W/s)
        out = self.relu(self.bn1(self.conv1(x)))  # (B, planes, H, W)
        out = self.relu(self.bn2(self.conv2(out)))  # (B, planes, H/s, W/s)
        out = self.bn3(self.conv3(out))  # (B, 4 planes, H/s, W/s)
        return self.relu(out + identity)


class ResNet(Encoder):
    """A ResNet trunk returning its four stages (module docstring).

    Args:
        block: ``BasicBlock`` or ``Bottleneck``.
        layers: blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18, (3, 4, 6, 3) for 34 and 50.
        config: the options.
    """

    ignored_weight_keys = ("fc.weight", "fc.bias")  # the ImageNet classifier; features_only has none
    strides = (4, 8, 16, 32)

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: tuple[int, int, int, int],
        config: ResNetConfig = ResNetConfig(),
    ):
        super().__init__()
        self.config = config
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0], stride=1)
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.channels = tuple(64 * 2**i * block.expansion for i in range(4))

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if config.zero_init_residual:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    nn.init.constant_(m.last_bn().weight, 0)

    def _make_layer(self, block: type[BasicBlock | Bottleneck], planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            # The projection shortcut (option B of He et al.): 1x1 conv + BN, named
            # downsample.0 / downsample.1 as torchvision names them.
            downsample = nn.Sequential(
                _conv1x1(self.inplanes, planes * block.expansion, stride), nn.BatchNorm2d(planes * block.expansion)
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        """``image`` (B, 3, H, W) -> the four stage outputs, finest first."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(image))))  # (B, 64, H/4, W/4)
        c2 = self.layer1(x)  # (B, C0, H/4, W/4)
        c3 = self.layer2(c2)  # (B, C1, H/8, W/8)
        c4 = self.layer3(c3)  # (B, C2, H/16, W/16)
        c5 = self.layer4(c4)  # (B, C3, H/32, W/32)
        return [c2, c3, c4, c5]


@register_encoder("resnet18", config=ResNetConfig)
def resnet18(config: ResNetConfig) -> ResNet:
    """ResNet-18: basic blocks (2, 2, 2, 2), channels (64, 128, 256, 512)."""
    return ResNet(BasicBlock, (2, 2, 2, 2), config)


@register_encoder("resnet34", config=ResNetConfig)
def resnet34(config: ResNetConfig) -> ResNet:
    """ResNet-34: basic blocks (3, 4, 6, 3), channels (64, 128, 256, 512)."""
    return ResNet(BasicBlock, (3, 4, 6, 3), config)


@register_encoder("resnet50", config=ResNetConfig)
def resnet50(config: ResNetConfig) -> ResNet:
    """ResNet-50: bottleneck blocks (3, 4, 6, 3), channels (256, 512, 1024, 2048)."""
    return ResNet(Bottleneck, (3, 4, 6, 3), config)
