"""The real-time two-pathway network with the task-adaptive attention generator (TAG).

Choi, Shin, Lee, Cho, Park and Im, "Multi-task Learning for Real-time Autonomous Driving
Leveraging Task-adaptive Attention Generator" (2024): Table I (the network), Alg. 1 and eq. 1
(hierarchical aggregation), eq. 2 (fusion), eq. 3-4 (TAG), Table III (the ablation switches).
Registered as ``tag-realtime``; every task head of ``train/tasks`` runs on it.

**Encoder** (``TwoPathwayEncoder``, Table I; w = ``width``, 64 in the paper; basic = a ResNet basic
block, two 3x3 convs and the identity, He et al. 2016, the ``[3x3; 3x3] x n`` of the table)::

    stem    3x3/2 w, 3x3/2 w                        1/4
    layer1  basic w        x2                       1/4
    layer2  basic 2w  /2   x3                       1/8  ---------------------.
    layer3  basic 4w  /2   x3   (semantic)          1/16     detail3 basic 2w x3   1/8
    layer4  basic 8w  /2   x3                       1/32     detail4 basic 2w x3   1/8
    layer5  basic 16w /2   x3                       1/64     detail5 basic 2w x3   1/8

``forward`` returns ``[x_detail, x3, x4, x5]`` (strides 8, 16, 32, 64).

**Neck** (``TAGNeck``): the hierarchical aggregation over (x3, x4, x5) gives ``x_agg`` at 1/16
(Alg. 1 with N = 3 stages, depth 2: three nodes, which are Table I's decode layer1, one node
of 8w = 512 channels at 1/32, and decode layer2, two nodes of C = 4w = 256 at 1/16), then
``h = B(x_agg) + g(x_detail)`` (eq. 2; B bilinear to 1/8, g a 1x1 conv + BN to C channels),
the task-generic ``beta = sigmoid(S_sp(x_detail))`` (eq. 3, S_sp one dilated 3x3 conv to one
channel) and GAP(x5), the context of the channel attention. Its output is ``SharedFeatures``.

**Heads** (``TaskAdaptiveHead``, one per task): ``alpha_t = sigmoid(S_ch^t(GAP(x5)))`` (eq. 3,
S_ch^t two linear layers 16w -> C -> C with a ReLU between), ``h_t = alpha_t * h + beta`` (eq.
4, alpha_t broadcast over the pixels, beta over the channels), and the task's own head from
``train/tasks`` built on one map of C channels at stride 8, called ``head([h_t], image_size)``.

Where Table I and the text are explicit they are followed: the stem, every stage's width,
stride and block count, the branch point at 1/8 with no downsampling in the detail branch, the
decode layers' widths and node counts, eq. 1-4. Where they are silent, the choices are:

* **Blocks**: BN after every conv and ReLU after the sum, as ResNet (the convolutions have no
  bias); a 1x1 conv + BN projection shortcut where a block strides or changes width
  (``resnet.BasicBlock``, so the parameter names are torchvision's inside each stage).
* **Detail branch width**: 2w = 128 (layer2's width, so the branch continues layer2's map
  without a projection; DDRNet-23's high-resolution width, Hong et al. 2021, which the paper
  builds on). Blocks: the table's x3 per row, next to layer3, layer4 and layer5.
* **No bilateral fusion between the branches** (DDRNet exchanges features at every stage): the
  paper names one fusion only, eq. 2.
* **Aggregation node** (eq. 1): ``f(x, y) = W2(concat(B(W1 x), y))`` with W1 and W2 3x3 conv +
  BN + ReLU; W1 runs on x at its own (coarser) resolution, B is 2x bilinear upsampling
  (``align_corners=False``, to y's size so odd inputs fit). Alg. 1 reads ``L[j-1] <-
  f(L[j-1], L[j])`` while eq. 1 upsamples x: the two agree when L is ordered **coarsest first**,
  ``L = [x5, x4, x3]``, which is the order used: f_11 = f(x5, x4) -> 1/32, 8w; f_22 = f(x4,
  x3) -> 1/16, C; f_21 = f(f_11, f_22) -> 1/16, C; ``x_agg = L[0]``.
* **g**: 1x1 conv + BN, no activation (a projection, DDRNet's "compression").
* **S_sp**: 3x3 conv, dilation 2, with bias, to one channel: one spatial map shared by all
  tasks ("task-generic spatial attention"); it starts at weights N(0, 0.01) and bias 0, so beta
  starts near 0.5 everywhere instead of a saturated random map.
* **S_ch^t** hidden width: C. With C = 256 and three tasks the attention generators hold
  3 x (1024 x 256 + 256 + 256 x 256 + 256) + 1,153 = 0.99 M parameters, the paper's 33.9 M - 32.8 M
  = 1.1 M to its rounding (Table II), which supports this reading.
* **Pyramid pooling** (Table III's "agg -> PPM"; Zhao et al. 2017, PSPNet) on x5: bins 1, 2, 3,
  6, each average pooling -> 1x1 conv (16w / 4 channels, with bias) -> ReLU -> bilinear back to
  x5's size; concat with x5; 3x3 conv + BN + ReLU to C. The pooled branches have no BN
  (PSPNet has): the 1x1 bin holds one value per channel and sample, which BatchNorm cannot
  normalise in a batch of one.
* **Without the high-resolution branch** (``branch=False``, Table III's first row): the detail
  blocks are removed and layer2's output (the branch's input, 1/8, 2w) takes the place of
  ``x_detail`` in eq. 2 and 3, so the ablation removes exactly the branch's convolutions.
* **Heads**: the project's heads (``train/tasks``), not retrained copies of the paper's: seg and
  depth are conv3x3-BN-ReLU-conv1x1 (the paper's CRC has no BN), det3d is one
  Conv3x3-ReLU-Conv1x1 branch per output (the paper's CRC, with this project's outputs). Their
  hidden widths are task options (``task_options.seg.hidden``, ``task_options.depth.hidden``,
  ``task_options.det3d.head_channels``; Table I: 256). Every head reads h_t at **stride 8**: a
  task whose config has a ``stride`` left at its default is built with stride 8, another value
  than 8 is an error (the network has no other map).
* **Initialisation**: convolutions Kaiming normal (fan_out, ReLU), BN weight 1, bias 0 (as the
  ResNets here); linear layers PyTorch's default.

**Where the parameters are**: the encoder and the neck are the shared parts; each task's
attention generator S_ch^t is in that task's head (``heads.<task>.attention``): it is task
specific, only task t's loss reaches it, and in the asymmetric mode it steps with task t's
head, when k_t samples labelling t have been seen. beta's S_sp is task-generic, so it is in the
neck.

**Options** (``create_model("tag-realtime", tasks, **options)``, ``--set model_options.X=...``):
``branch``, ``aggregation``, ``channel_attention``, ``spatial_attention`` (Table III's columns;
both attentions off is Table II's "Ours (w/o TAG)"), ``width`` (w); ``neck_channels`` sets C
(default 4w, Table I's 256). ``weights`` loads a state dict file of this encoder.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from mtl_data.errors import MtlDataError
from mtl_data.train.models.base import Encoder, Neck
from mtl_data.train.models.multitask import MultiTaskModel
from mtl_data.train.models.registry import register_model
from mtl_data.train.models.resnet import BasicBlock
from mtl_data.train.tasks.base import Task

#: the stride of h and h_t: every head reads its map there (the paper's 1/8).
HEAD_STRIDE = 8
#: blocks per stage, Table I.
LAYER1_BLOCKS, STAGE_BLOCKS = 2, 3
#: PSPNet's pooling bins (Zhao et al. 2017).
PPM_BINS = (1, 2, 3, 6)
#: dilation of S_sp's 3x3 conv (the paper: "single dilated convolution"; rate 2 doubles the
#: receptive field of a plain 3x3 at no cost).
SPATIAL_DILATION = 2


@dataclass(frozen=True)
class TAGConfig:
    """Options of ``tag-realtime`` (Table III's switches and the width).

    Attributes:
        branch: the high-resolution detail branch (off: layer2's output stands in for it).
        aggregation: the hierarchical aggregation layers (off: pyramid pooling on layer5).
        channel_attention: the task-specific channel attention alpha_t (off: alpha_t = 1).
        spatial_attention: the task-generic spatial attention beta (off: beta = 0).
        width: w, channels of the stem; stages are w x (1, 2, 4, 8, 16), the detail branch 2w
            (the paper: 64).
    """

    branch: bool = True
    aggregation: bool = True
    channel_attention: bool = True
    spatial_attention: bool = True
    width: int = 64

    def __post_init__(self) -> None:
        if self.width < 1:
            raise MtlDataError(f"model tag-realtime: width must be a positive integer, got {self.width}")


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """3x3 conv (no bias: BN has one) + BN + ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def _stage(in_channels: int, out_channels: int, blocks: int, stride: int) -> nn.Sequential:
    """``blocks`` basic blocks; the first strides and, where it strides or changes width, has the
    1x1 conv + BN projection shortcut (``downsample.0`` / ``downsample.1``, torchvision's names)."""
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
        )
    layers = [BasicBlock(in_channels, out_channels, stride, downsample)]
    layers += [BasicBlock(out_channels, out_channels) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


def _init(module: nn.Module) -> None:
    """Kaiming normal (fan_out, ReLU) for convolutions, BN weight 1 and bias 0 (as the ResNets)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# ---- encoder ------------------------------------------------------------------------------------


class TwoPathwayEncoder(Encoder):
    """Stem, layer1-2, then the semantic branch (layer3-5) next to the detail branch (Table I).

    ``forward(image (B, 3, H, W))`` returns ``[x_detail, x3, x4, x5]``: (B, 2w, H/8, W/8),
    (B, 4w, H/16, W/16), (B, 8w, H/32, W/32), (B, 16w, H/64, W/64) (sizes halve with ceil).
    With ``branch=False`` x_detail is layer2's output (module docstring).
    """

    strides = (8, 16, 32, 64)

    def __init__(self, width: int = 64, branch: bool = True):
        super().__init__()
        w = width
        self.channels = (2 * w, 4 * w, 8 * w, 16 * w)
        self.stem = nn.Sequential(_conv_bn_relu(3, w, stride=2), _conv_bn_relu(w, w, stride=2))
        self.layer1 = _stage(w, w, LAYER1_BLOCKS, stride=1)
        self.layer2 = _stage(w, 2 * w, STAGE_BLOCKS, stride=2)
        self.layer3 = _stage(2 * w, 4 * w, STAGE_BLOCKS, stride=2)
        self.layer4 = _stage(4 * w, 8 * w, STAGE_BLOCKS, stride=2)
        self.layer5 = _stage(8 * w, 16 * w, STAGE_BLOCKS, stride=2)
        # The detail branch never downsamples: it keeps layer2's 1/8 map (the paper's section III-A).
        self.detail = (
            nn.Sequential(*(_stage(2 * w, 2 * w, STAGE_BLOCKS, stride=1) for _ in range(3))) if branch else None
        )
        _init(self)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        x = self.layer1(self.stem(image))  # (B, w, H/4, W/4)
        x2 = self.layer2(x)  # (B, 2w, H/8, W/8)
        x3 = self.layer3(x2)  # (B, 4w, H/16, W/16)
        x4 = self.layer4(x3)  # (B, 8w, H/32, W/32)
        x5 = self.layer5(x4)  # (B, 16w, H/64, W/64)
        detail = x2 if self.detail is None else self.detail(x2)  # (B, 2w, H/8, W/8)
        return [detail, x3, x4, x5]


# ---- neck: aggregation or pyramid pooling, fusion, spatial attention --------------------------------


class AggregationNode(nn.Module):
    """``f(x, y) = W2(concat(B(W1 x), y))`` (eq. 1): x one level coarser than y.

    W1: 3x3 conv + BN + ReLU on x (``x_channels`` -> ``out_channels``) at x's resolution; B:
    bilinear upsampling to y's size (2x); W2: 3x3 conv + BN + ReLU on the concatenation
    (``out_channels + y_channels`` -> ``out_channels``) at y's resolution.
    """

    def __init__(self, x_channels: int, y_channels: int, out_channels: int):
        super().__init__()
        self.project = _conv_bn_relu(x_channels, out_channels)  # W^P1
        self.fuse = _conv_bn_relu(out_channels + y_channels, out_channels)  # W^P2

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(self.project(x), size=y.shape[-2:], mode="bilinear", align_corners=False)  # (B, O, h, w)
        return self.fuse(torch.cat([up, y], dim=1))  # (B, O, h, w) at y's resolution


class HierarchicalAggregation(nn.Module):
    """Alg. 1 over ``L = [x_1, ..., x_N]``, ordered coarsest first (module docstring).

    ``for i in 1..N-1: for j in i..1: L[j-1] <- f_ij(L[j-1], L[j])``; returns ``L[0]``, at the
    finest level's resolution. A node's output width is ``widths[level]`` of the level it
    outputs at (the level of its y), so the node table is built by running Alg. 1 on channel
    counts at construction.

    Args:
        channels: channels of ``L``'s maps, coarsest first.
        widths: output channels of a node at each level of ``L`` (index 0 unused: no node
            outputs at the coarsest level).
    """

    def __init__(self, channels: tuple[int, ...], widths: tuple[int, ...]):
        super().__init__()
        self.levels = len(channels)
        slot_channels = list(channels)  # channels of each slot of L as Alg. 1 rewrites it
        slot_level = list(range(self.levels))  # resolution level of each slot
        nodes = {}
        for i in range(1, self.levels):
            for j in range(i, 0, -1):
                level = slot_level[j]
                nodes[f"f{i}{j}"] = AggregationNode(slot_channels[j - 1], slot_channels[j], widths[level])
                slot_channels[j - 1], slot_level[j - 1] = widths[level], level
        self.nodes = nn.ModuleDict(nodes)
        self.out_channels = slot_channels[0]

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """``maps`` coarsest first, each twice the previous one's size -> x_agg at the finest."""
        slots = list(maps)
        for i in range(1, self.levels):
            for j in range(i, 0, -1):
                slots[j - 1] = self.nodes[f"f{i}{j}"](slots[j - 1], slots[j])  # (B, widths[level], h_j, w_j)
        return slots[0]


class PyramidPooling(nn.Module):
    """PSPNet's pyramid pooling module (Zhao et al. 2017) on one map (module docstring).

    Returns (B, out_channels, h, w) for an input (B, in_channels, h, w).
    """

    def __init__(self, in_channels: int, out_channels: int, bins: tuple[int, ...] = PPM_BINS):
        super().__init__()
        branch = max(1, in_channels // len(bins))
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(b), nn.Conv2d(in_channels, branch, 1), nn.ReLU(inplace=True))
            for b in bins
        )
        self.bottleneck = _conv_bn_relu(in_channels + branch * len(bins), out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [F.interpolate(s(x), size=size, mode="bilinear", align_corners=False) for s in self.stages]
        return self.bottleneck(torch.cat([x, *pooled], dim=1))  # (B, out, h, w)


class SharedFeatures(NamedTuple):
    """What the neck hands every head (module docstring).

    Attributes:
        h: (B, C, H/8, W/8) the task-generic feature of eq. 2.
        beta: (B, 1, H/8, W/8) in (0, 1), the task-generic spatial attention; None when off.
        context: (B, 16w) GAP of the semantic branch's last map, S_ch^t's input; None when the
            channel attention is off.
    """

    h: torch.Tensor
    beta: torch.Tensor | None
    context: torch.Tensor | None


class TAGNeck(Neck):
    """Aggregation (or pyramid pooling), eq. 2's fusion, S_sp and the GAP of x5 (module docstring).

    ``forward([x_detail, x3, x4, x5])`` -> ``SharedFeatures``; ``out_channels`` = C, ``strides``
    = (8,): the heads are built for one map of C channels at stride 8.
    """

    strides = (HEAD_STRIDE,)

    def __init__(
        self,
        in_channels: tuple[int, ...],
        out_channels: int,
        aggregation: bool = True,
        spatial_attention: bool = True,
        channel_attention: bool = True,
    ):
        super().__init__()
        detail, c3, c4, c5 = in_channels
        self.in_channels = tuple(in_channels)
        self.out_channels = out_channels
        self.context_channels = c5
        self.channel_attention = channel_attention
        if aggregation:
            # widths per level of [x5, x4, x3]: decode layer1 keeps layer4's width (Table I: 512),
            # decode layer2 gives C (256)
            self.aggregation: nn.Module = HierarchicalAggregation((c5, c4, c3), (c5, c4, out_channels))
        else:
            self.aggregation = PyramidPooling(c5, out_channels)
        self.uses_pyramid_pooling = not aggregation
        # S_sp before g, so that g is the neck's last weighted layer: the "last shared layer"
        # gradient-based weightings (GradNorm) take when no layer is named, a C-channel map that
        # every h_t contains.
        self.spatial = (
            nn.Conv2d(detail, 1, 3, padding=SPATIAL_DILATION, dilation=SPATIAL_DILATION) if spatial_attention else None
        )
        self.project = nn.Sequential(nn.Conv2d(detail, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))  # g
        _init(self)
        if self.spatial is not None:
            # Small weights, zero bias: beta starts near 0.5 everywhere, a uniform shift, and learns
            # where to rise. Kaiming's fan_out rule (fan_out = 9 for one output channel) gives
            # logits in the tens on an untrained detail map, a saturated 0/1 map with no gradient.
            nn.init.normal_(self.spatial.weight, std=0.01)
            nn.init.zeros_(self.spatial.bias)

    def forward(self, features: list[torch.Tensor]) -> SharedFeatures:
        detail, x3, x4, x5 = features
        if self.uses_pyramid_pooling:
            agg = self.aggregation(x5)  # (B, C, H/64, W/64)
        else:
            agg = self.aggregation([x5, x4, x3])  # (B, C, H/16, W/16)
        up = F.interpolate(agg, size=detail.shape[-2:], mode="bilinear", align_corners=False)  # (B, C, H/8, W/8)
        h = up + self.project(detail)  # (B, C, H/8, W/8), eq. 2
        beta = None if self.spatial is None else torch.sigmoid(self.spatial(detail))  # (B, 1, H/8, W/8)
        context = x5.mean(dim=(2, 3)) if self.channel_attention else None  # (B, 16w) GAP
        return SharedFeatures(h, beta, context)


# ---- heads ------------------------------------------------------------------------------------------


class TaskAdaptiveHead(nn.Module):
    """``h_t = alpha_t * h + beta`` (eq. 4), then the task's own head on ``[h_t]``.

    Args:
        head: the task's head, built for one map of C channels at stride 8.
        context_channels: channels of S_ch^t's input (16w); None: no channel attention.
        channels: C.
    """

    def __init__(self, head: nn.Module, context_channels: int | None, channels: int):
        super().__init__()
        self.attention = (
            None
            if context_channels is None
            else nn.Sequential(
                nn.Linear(context_channels, channels), nn.ReLU(inplace=True), nn.Linear(channels, channels)
            )
        )  # S_ch^t
        self.head = head

    def alpha(self, context: torch.Tensor) -> torch.Tensor:
        """alpha_t (B, C) in (0, 1) from the GAP of x5 (B, 16w) (eq. 3)."""
        if self.attention is None:
            raise MtlDataError("this model has no channel attention (channel_attention=false)")
        return torch.sigmoid(self.attention(context))  # (B, C)

    def adapt(self, shared: SharedFeatures) -> torch.Tensor:
        """h_t (B, C, H/8, W/8) of eq. 4 (alpha_t = 1 and beta = 0 where switched off)."""
        h = shared.h  # (B, C, H/8, W/8)
        if self.attention is not None:
            h = self.alpha(shared.context)[:, :, None, None] * h  # (B, C, H/8, W/8)
        if shared.beta is not None:
            h = h + shared.beta  # (B, C, H/8, W/8), beta broadcast over the channels
        return h

    def forward(self, shared: SharedFeatures, image_size: tuple[int, int]) -> Any:
        return self.head([self.adapt(shared)], image_size)


# ---- the model --------------------------------------------------------------------------------------


class TAGModel(MultiTaskModel):
    """Two-pathway encoder -> ``TAGNeck`` -> one ``TaskAdaptiveHead`` per task (module docstring).

    ``parts()`` is MultiTaskModel's: ``encoder``, ``neck`` and ``heads.<task>``, each task's
    attention generator inside its head. ``config`` is the ``TAGConfig`` it was built with.
    """

    config: TAGConfig

    def build_head(self, task: Task) -> nn.Module:
        neck = self.neck
        context = neck.context_channels if neck.channel_attention else None
        return TaskAdaptiveHead(task.build_head(self.feature_spec), context, neck.out_channels)


def _at_head_stride(task: Task) -> Task:
    """``task`` with its config's ``stride`` at 8, when it has one left at its default.

    Raises:
        MtlDataError: the stride was set to another value than 8.
    """
    config = task.config
    if not dataclasses.is_dataclass(config):
        return task
    field = next((f for f in dataclasses.fields(config) if f.name == "stride"), None)
    if field is None or config.stride == HEAD_STRIDE:
        return task
    if config.stride != field.default:
        raise MtlDataError(
            f"model tag-realtime: its heads read one map, h_t at stride {HEAD_STRIDE}; task {task.name} asks "
            f"for stride {config.stride}: set task_options.{task.name}.stride={HEAD_STRIDE} or leave it out"
        )
    return type(task)(dataclasses.replace(config, stride=HEAD_STRIDE), classes=task.classes)


@register_model("tag-realtime", config=TAGConfig)
def tag_realtime(tasks: list[Task], config: TAGConfig, *, weights, neck_channels) -> TAGModel:
    """Choi et al.'s real-time multi-task network (module docstring); C = ``neck_channels`` or 4w."""
    channels = 4 * config.width if neck_channels is None else neck_channels
    if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
        raise MtlDataError(f"model tag-realtime: neck_channels must be a positive integer, got {channels!r}")
    encoder = TwoPathwayEncoder(config.width, config.branch)
    if weights is not None:
        encoder.load_weights(weights, what="encoder of tag-realtime")
    neck = TAGNeck(
        encoder.channels,
        channels,
        aggregation=config.aggregation,
        spatial_attention=config.spatial_attention,
        channel_attention=config.channel_attention,
    )
    model = TAGModel(encoder, neck, [_at_head_stride(t) for t in tasks])
    model.config = config
    return model
