"""The multi-task network: a shared encoder and neck, and one head per task.

``forward(image)`` returns ``{task: output}``. Every head runs on every batch, whatever the
batch labels (partial labels are handled by masking the losses, trainer.md section 3), so the
graph is the same on every step: DDP needs no ``find_unused_parameters`` and ``torch.compile``
no graph breaks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from mtl_data.errors import MtlDataError
from mtl_data.train.models.base import Encoder, Neck
from mtl_data.train.tasks.base import FeatureSpec, Task


class MultiTaskModel(nn.Module):
    """Encoder -> neck -> one head per task (house style 11).

    Args:
        encoder: image (B, 3, H, W) -> maps at ``encoder.strides``.
        neck: those maps -> as many maps of ``neck.out_channels`` channels.
        tasks: the tasks, in output order; each builds its head from ``feature_spec``.

    Attributes:
        encoder, neck: the shared parts.
        heads: ``nn.ModuleDict`` task name -> head, called ``head(features, (H, W))``.
        tasks: plain dict task name -> ``Task`` (losses, decoding, metrics); not submodules.
        feature_spec: the ``FeatureSpec`` the heads were built with.
    """

    def __init__(self, encoder: Encoder, neck: Neck, tasks: Sequence[Task]):
        super().__init__()
        names = [t.name for t in tasks]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise MtlDataError(f"task {', '.join(twice)} given twice; each task has one head")
        self.encoder = encoder
        self.neck = neck
        # a neck that changes resolutions (TAG's: one map at stride 8) says so with ``strides``
        strides = getattr(neck, "strides", None) or encoder.strides
        self.feature_spec = FeatureSpec(channels=neck.out_channels, strides=tuple(strides))
        self.heads = nn.ModuleDict({t.name: self.build_head(t) for t in tasks})
        self.tasks: dict[str, Task] = {t.name: t for t in tasks}

    def build_head(self, task: Task) -> nn.Module:
        """``task``'s head on ``feature_spec``; a subclass may wrap it (TAG adds a per-task attention)."""
        return task.build_head(self.feature_spec)

    def features(self, image: torch.Tensor) -> list[torch.Tensor]:
        """The neck's maps of ``image`` (B, 3, H, W): (B, D, H / s, W / s) per stride s."""
        return self.neck(self.encoder(image))

    def forward(self, image: torch.Tensor) -> dict[str, Any]:
        """``image`` (B, 3, H, W), normalised -> ``{task: head output}`` for every task."""
        return self.forward_encoded(self.encoder(image), (image.shape[-2], image.shape[-1]))

    def forward_encoded(self, maps: Sequence[torch.Tensor], image_size: tuple[int, int]) -> dict[str, Any]:
        """The neck and every head on the encoder's ``maps`` of an image of ``image_size`` (H, W).

        ``forward`` is ``forward_encoded(encoder(image), size)``; a multi-frame model
        (``multiframe.MultiFrameModel``) calls it on the maps it combined from several frames, so a
        subclass that changes what follows the encoder overrides this method, not ``forward``.
        """
        features = self.neck(list(maps))  # [(B, D, H/4, W/4), ..., (B, D, H/32, W/32)]
        return {name: head(features, image_size) for name, head in self.heads.items()}

    def parts(self) -> dict[str, nn.Module]:
        """The parts that get an optimizer or a parameter group each: ``encoder``, ``neck`` and
        ``heads.<task>``; every parameter of the model is in exactly one of them.

        A subclass with parameters outside these (e.g. an attention generator) adds its parts.
        """
        return {"encoder": self.encoder, "neck": self.neck, **{f"heads.{n}": h for n, h in self.heads.items()}}
