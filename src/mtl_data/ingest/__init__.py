"""Raw dataset converters (one module per dataset) and the parallel ingest engine (no torch)."""

from mtl_data.ingest import a2d2, cityscapes, gtsrb, kitti, tusimple  # noqa: F401  (register the converters)
from mtl_data.ingest.registry import (
    CONVERTERS,
    Converter,
    Frame,
    converter_class,
    create_converter,
    list_converters,
    register_converter,
)

__all__ = [
    "CONVERTERS",
    "Converter",
    "Frame",
    "converter_class",
    "create_converter",
    "list_converters",
    "register_converter",
]
