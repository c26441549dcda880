"""Multi-frame input: frame t and its previous frames through one shared encoder (MultiNet++).

Chennupati, Sistu, Yogamani and Rawashdeh, "MultiNet++: Multi-Stream Feature Aggregation and
Geometric Loss Strategy for Multi-Task Learning" (CVPR-W 2019), Sec. 3.1 and Fig. 1-2: frames t
and t-1 go through one encoder whose weights are shared ("siamese"), their feature maps are
aggregated, and the task decoders run once on the aggregate; "features computed in the previous
frame can be leveraged without additional computation", so at video inference each frame costs
one encoder pass (``FrameStream``).

``MultiFrameModel(model, frames, fusion)`` turns any built model (``MultiTaskModel`` or a
subclass: ``resnet*-fpn``, ``tag-realtime``...) into one that takes ``frames`` frames::

    image (B, 3, H, W), image_prev (B, N, 3, H, W), prev_present (B, N)      N = frames - 1
      -> encoder on [t, t-1, ..., t-N] in ONE batched call (B (N + 1) images, frame-major)
      -> per encoder level: fusion(maps_t, maps_prev)      (B, C_l, h_l, w_l)
      -> the model's own neck and heads (``MultiTaskModel.forward_encoded``), once

Decisions (docs/training.md, "Multi-frame input"):

* **Aggregation point**: the encoder's maps, every level, before the neck (the paper aggregates
  encoder outputs at three depths of ResNet-50 before its FCN8 decoders); the neck and the
  heads run once, so a second frame adds one encoder pass and the fusion, nothing else.
* **Fusions** (a registry, ``register_fusion``): ``sum``, the paper's aggregation by addition
  (``t + sum_k (t-k)``; the paper names concatenation and addition as the simple choices and
  the abstract's "aggregation" is a sum in Fig. 1); ``conv1x1``, a learned 1x1 convolution over
  the concatenated ``[t, t-1, ..., t-N]`` maps of a level (Sistu et al. 2019's 1x1 bottleneck,
  which the paper cites), **initialised as the sum** (weight ``[I, I, ..., I]``, bias 0), so
  it starts where ``sum`` is and learns away from it. Its weight is a 2-D+ weight and
  weight-decayed like the neck's (toward 0, not toward the sum: a choice, not a paper's).
* **Absent previous frames** (``prev_present`` False: the first frame of a sequence, a source
  without sequences): their maps are **replaced by frame t's** (``torch.where``), so the
  fusion sees ``t + t`` for a sample without t-1, exactly what streaming inference does on the
  first frame of a video (it has nothing else). The previous-frame image is replaced by frame t
  too before the encoder, so in training BatchNorm's batch statistics see real images instead
  of the loader's zero (black) fill. ``torch.where`` keeps the graph the same on every step
  (DDP without ``find_unused_parameters``, ``torch.compile`` without recompiles); the encoder
  always runs on all B (N + 1) images.
* **Parameter names**: the wrapped model's modules are this module's own children under their
  own names (``encoder``, ``neck``, ``heads``...), not under a prefix, so a single-frame
  checkpoint, ``init_from`` and ImageNet encoder weights load unchanged; ``sum`` adds no
  parameter, ``conv1x1`` adds ``fusion.convs.<level>.weight/bias``.
* **Parts**: the fusion joins the ``neck`` part (``parts()["neck"]`` holds neck and fusion): it
  is shared by every task and freshly initialised like the neck (no ImageNet weights), so it
  takes the neck's learning rate, and the asymmetric mode steps it with the shared part.
* **Streaming** (``FrameStream``): the encoder maps of the last N frames are cached; a new
  frame costs one encoder pass + fusion + neck + heads, with the same fusion and the same
  absent rule as training, so streaming equals the batched model on the same frames (to
  floating-point summation order).

``model_inputs(batch)`` gives the model's positional arguments for a loader batch:
``(image,)``, or ``(image, image_prev, prev_present)`` when the batch carries previous frames
(``LoaderConfig.frames`` > 1), so every call site is ``model(*model_inputs(batch))``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from mtl_data.errors import MtlDataError
from mtl_data.train.models.multitask import MultiTaskModel

#: the batch keys a multi-frame model reads besides ``image``, in its ``forward``'s order
FRAME_KEYS = ("image_prev", "prev_present")


def model_inputs(batch: Mapping[str, Any], device: torch.device | None = None) -> tuple[torch.Tensor, ...]:
    """The positional arguments of a model for ``batch``: ``(image,)``, or ``(image, image_prev,
    prev_present)`` when the batch carries previous frames.

    The batch says what it carries: the loader's ``frames`` and the model's come from the same
    config (``run.build_model``), and a single-frame model given previous frames refuses the
    extra arguments rather than ignoring them. ``device``: copy there (``non_blocking``).
    """
    keys = ("image", *FRAME_KEYS) if "image_prev" in batch else ("image",)
    values = tuple(batch[k] for k in keys)
    if device is not None:
        values = tuple(v.to(device, non_blocking=True) for v in values)
    return values


# ---- fusions --------------------------------------------------------------------------------------


class FrameFusion(nn.Module):
    """Base of the fusions: ``forward(current, previous) -> list[Tensor]``, one map per level.

    ``current[l]`` is frame t's map of level l, (B, C_l, h_l, w_l); ``previous[l]`` the previous
    frames' maps of that level, (B, N, C_l, h_l, w_l), t-1 first, absent frames already replaced
    by frame t's. The result has ``current``'s shapes.
    """

    def __init__(self, channels: Sequence[int], frames: int):
        super().__init__()
        self.channels, self.frames = tuple(channels), int(frames)


_FUSIONS: dict[str, type[FrameFusion]] = {}


def register_fusion(name: str) -> Callable[[type[FrameFusion]], type[FrameFusion]]:
    """Class decorator: ``cls(channels, frames)`` is the fusion ``name`` (``frame_fusion``)."""

    def decorator(cls: type[FrameFusion]) -> type[FrameFusion]:
        if name in _FUSIONS:
            raise ValueError(f"frame fusion {name!r} registered twice")
        _FUSIONS[name] = cls
        return cls

    return decorator


def list_fusions() -> list[str]:
    """The registered fusions, sorted."""
    return sorted(_FUSIONS)


def create_fusion(name: str, channels: Sequence[int], frames: int) -> FrameFusion:
    """The fusion ``name`` over encoder maps of ``channels`` from ``frames`` frames.

    Raises:
        MtlDataError: an unknown fusion (the registered ones listed).
    """
    if name not in _FUSIONS:
        raise MtlDataError(f"unknown frame fusion {name!r}; choose from {', '.join(list_fusions())}")
    return _FUSIONS[name](channels, frames)


@register_fusion("sum")
class SumFusion(FrameFusion):
    """MultiNet++'s aggregation by addition: ``t + (t-1) + ... + (t-N)`` per level; no parameters."""

    def forward(self, current: list[torch.Tensor], previous: list[torch.Tensor]) -> list[torch.Tensor]:
        return [c + p.sum(dim=1) for c, p in zip(current, previous)]  # (B, C_l, h_l, w_l) each


@register_fusion("conv1x1")
class Conv1x1Fusion(FrameFusion):
    """A learned 1x1 convolution per level over ``concat(t, t-1, ..., t-N)`` (B, (N + 1) C_l, h, w)
    -> (B, C_l, h, w) (Sistu et al. 2019's 1x1 bottleneck, cited by MultiNet++), initialised to
    the sum: weight ``[I, ..., I]`` (one identity block per frame), bias 0."""

    def __init__(self, channels: Sequence[int], frames: int):
        super().__init__(channels, frames)
        self.convs = nn.ModuleList(nn.Conv2d(frames * c, c, kernel_size=1) for c in self.channels)
        with torch.no_grad():
            for conv, c in zip(self.convs, self.channels):
                eye = torch.eye(c).reshape(c, c, 1, 1)
                conv.weight.copy_(eye.repeat(1, frames, 1, 1))  # (C, F C, 1, 1)
                conv.bias.zero_()

    def forward(self, current: list[torch.Tensor], previous: list[torch.Tensor]) -> list[torch.Tensor]:
        # previous (B, N, C, h, w) -> (B, N C, h, w): channels frame-major, t-1 first, as the weight
        return [conv(torch.cat([c, p.flatten(1, 2)], dim=1)) for conv, c, p in zip(self.convs, current, previous)]


# ---- the model ------------------------------------------------------------------------------------


class MultiFrameModel(MultiTaskModel):
    """``model`` taking frame t and its ``frames - 1`` previous frames (module docstring).

    Args:
        model: a built single-frame model; its modules become this model's, under their names.
        frames: frames per sample, 2 or more (``LoaderConfig.frames``).
        fusion: a registered fusion (``list_fusions()``: ``sum``, ``conv1x1``).

    Attributes:
        inner: the wrapped model (not a submodule: its modules are registered here directly);
            its ``forward_encoded`` runs the neck and heads.
        fusion: the ``FrameFusion`` (a submodule: ``fusion.*`` parameters for ``conv1x1``).
        frames: frames per sample; ``fusion_name`` the fusion's registry name.

    Raises:
        MtlDataError: ``frames`` < 2, an unknown fusion, or a model with a module named ``fusion``.
    """

    def __init__(self, model: MultiTaskModel, frames: int, fusion: str = "sum"):
        nn.Module.__init__(self)  # not MultiTaskModel's: the parts are built already
        if frames < 2:
            raise MtlDataError(f"a multi-frame model takes 2 or more frames, got {frames}")
        if "fusion" in model._modules:
            raise MtlDataError(f"{type(model).__name__} has a module named 'fusion'; the frame fusion needs the name")
        for name, child in model.named_children():
            self.add_module(name, child)
        for name, param in model._parameters.items():
            self.register_parameter(name, param)
        for name, buffer in model._buffers.items():
            self.register_buffer(name, buffer)
        # a plain attribute, not a submodule: the state dict keeps the model's own names (set
        # after the registrations, which would otherwise find the names through __getattr__)
        object.__setattr__(self, "inner", model)
        self.fusion = create_fusion(fusion, model.encoder.channels, frames)
        self.frames, self.fusion_name = int(frames), fusion
        self.tasks, self.feature_spec = model.tasks, model.feature_spec

    def __getattr__(self, name: str) -> Any:
        # attributes of the wrapped model that are not modules (TAG's ``config``)
        try:
            return super().__getattr__(name)
        except AttributeError:
            inner = self.__dict__.get("inner")
            if inner is None:
                raise
            return getattr(inner, name)

    def train(self, mode: bool = True) -> MultiFrameModel:
        super().train(mode)
        self.inner.training = mode  # its children are ours and were set above
        return self

    def forward_encoded(self, maps: Sequence[torch.Tensor], image_size: tuple[int, int]) -> dict[str, Any]:
        """The wrapped model's neck and heads (a subclass's override included) on fused ``maps``."""
        return self.inner.forward_encoded(maps, image_size)

    def encode(
        self, image: torch.Tensor, image_prev: torch.Tensor | None = None, prev_present: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """The fused encoder maps, one per level (B, C_l, h_l, w_l); arguments as ``forward``."""
        b, n = image.shape[0], self.frames - 1
        if image_prev is None:  # no previous frame at all: every one is absent, t stands in
            current = self.encoder(image)  # [(B, C_l, h_l, w_l)]
            previous = [m.unsqueeze(1).expand(b, n, *m.shape[1:]) for m in current]  # [(B, N, C_l, h_l, w_l)]
            return self.fusion(current, previous)
        if image_prev.dim() != 5 or tuple(image_prev.shape) != (b, n, *image.shape[1:]):
            raise MtlDataError(
                f"image_prev must be (B, N, 3, H, W) = {(b, n, *image.shape[1:])} for {self.frames} frames "
                f"and image {tuple(image.shape)}, got {tuple(image_prev.shape)}"
            )
        if prev_present is None:
            prev_present = torch.ones(b, n, dtype=torch.bool, device=image.device)
        keep = prev_present.to(device=image.device, dtype=torch.bool)[:, :, None, None, None]  # (B, N, 1, 1, 1)
        # absent frames are frame t already at the input: BatchNorm's batch statistics (training)
        # then see real images, not the loader's zero fill; their maps are replaced below anyway
        prev = torch.where(keep, image_prev, image.unsqueeze(1))  # (B, N, 3, H, W)
        stacked = torch.cat([image, prev.transpose(0, 1).flatten(0, 1)])  # (B (N + 1), 3, H, W) frame-major
        if not image.is_contiguous() and image.is_contiguous(memory_format=torch.channels_last):
            stacked = stacked.contiguous(memory_format=torch.channels_last)  # as the trainer asked for t
        maps = self.encoder(stacked)  # one batched pass over every frame
        current = [m[:b] for m in maps]  # [(B, C_l, h_l, w_l)]
        previous = [
            torch.where(keep, m[b:].unflatten(0, (n, b)).transpose(0, 1), c.unsqueeze(1))  # (B, N, C_l, h_l, w_l)
            for m, c in zip(maps, current)
        ]
        return self.fusion(current, previous)

    def forward(
        self, image: torch.Tensor, image_prev: torch.Tensor | None = None, prev_present: torch.Tensor | None = None
    ) -> dict[str, Any]:
        """``{task: head output}`` for frame t.

        Args:
            image: frame t (B, 3, H, W), normalised.
            image_prev: the previous frames (B, N, 3, H, W), t-1 first, normalised as ``image``;
                None: no previous frame (each is frame t: the first frame of a stream, and what
                ``mtl-train speed`` and ``report``'s GFLOPs time: one encoder pass per frame).
            prev_present: (B, N) bool, False where a sample has no such frame; None = all there.
        """
        return self.forward_encoded(self.encode(image, image_prev, prev_present), (image.shape[-2], image.shape[-1]))

    def features(
        self, image: torch.Tensor, image_prev: torch.Tensor | None = None, prev_present: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """The neck's maps of the fused encoder maps (``MultiTaskModel.features`` for N + 1 frames)."""
        return self.neck(self.encode(image, image_prev, prev_present))

    def parts(self) -> dict[str, nn.Module]:
        """The wrapped model's parts, the fusion joining ``neck`` (module docstring): every
        parameter in exactly one part."""
        parts = dict(self.inner.parts())
        parts["neck"] = nn.ModuleDict({"neck": parts["neck"], "fusion": self.fusion})
        return parts


def wrap_frames(model: MultiTaskModel, frames: int, fusion: str = "sum") -> MultiTaskModel:
    """``model`` itself for one frame, else ``MultiFrameModel(model, frames, fusion)``."""
    return model if frames <= 1 else MultiFrameModel(model, frames, fusion)


# ---- streaming ------------------------------------------------------------------------------------


class FrameStream:
    """Streaming inference over a video: ``stream(image)`` -> the outputs of frame t.

    The encoder maps of the last ``frames - 1`` frames are cached, so every frame costs one
    encoder pass + fusion + neck + heads (MultiNet++: the previous frame's features "without
    additional computation"). Until N frames have been seen the missing ones are absent:
    frame t's maps stand in, as in training. A single-frame model is simply called.

    Run it under ``torch.no_grad`` / ``inference_mode`` with the model in eval mode; every
    ``image`` of a stream has one shape (``reset`` starts a new stream).
    """

    def __init__(self, model: MultiTaskModel):
        self.model = model
        self.frames = int(getattr(model, "frames", 1))
        self.cache: deque[list[torch.Tensor]] = deque(maxlen=max(self.frames - 1, 1))

    def reset(self) -> None:
        """Forget the cached frames: the next frame starts a new sequence."""
        self.cache.clear()

    def __call__(self, image: torch.Tensor) -> dict[str, Any]:
        """The outputs for ``image`` (B, 3, H, W), normalised, the frame after the last one given."""
        model = self.model
        if self.frames == 1:
            return model(image)
        current = model.encoder(image)  # [(B, C_l, h_l, w_l)], the one encoder pass of this frame
        if self.cache and self.cache[0][0].shape != current[0].shape:
            raise MtlDataError(
                f"a stream's frames have one shape: {tuple(image.shape)} after frames of another (reset() first)"
            )
        n, have = self.frames - 1, list(self.cache)  # t-1 first
        previous = [
            torch.stack([f[level] for f in have] + [c] * (n - len(have)), dim=1)  # (B, N, C_l, h_l, w_l)
            for level, c in enumerate(current)
        ]
        out = model.forward_encoded(model.fusion(current, previous), (image.shape[-2], image.shape[-1]))
        self.cache.appendleft(current)
        return out
