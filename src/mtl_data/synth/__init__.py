"""Tiny raw datasets in each source's NATIVE layout, for demos and tests (no torch)."""

from mtl_data.synth import a2d2, cityscapes, gtsrb, kitti, tusimple  # noqa: F401  (register the writers)
from mtl_data.synth.registry import SYNTHESIZERS, create_synth, list_synths, register_synth

__all__ = ["SYNTHESIZERS", "create_synth", "list_synths", "register_synth"]
