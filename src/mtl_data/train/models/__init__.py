"""Networks by name: a registry of encoders, necks and whole models (timm style).

``create_model("resnet18-fpn", tasks=["seg", "lane"])`` builds a ``MultiTaskModel``;
``list_models()`` names every encoder-neck composition and custom model. Every module of this
package is imported here, so that its ``@register_encoder`` / ``@register_neck`` /
``@register_model`` runs: adding an encoder or a neck is adding one file.
"""

import importlib
import pkgutil

from mtl_data.train.models.base import Encoder, Neck, load_state_dict_file
from mtl_data.train.models.multitask import MultiTaskModel
from mtl_data.train.models.registry import (
    DEFAULT_NECK_CHANNELS,
    create_encoder,
    create_model,
    create_neck,
    list_encoders,
    list_models,
    list_necks,
    register_encoder,
    register_model,
    register_neck,
)

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "DEFAULT_NECK_CHANNELS",
    "Encoder",
    "MultiTaskModel",
    "Neck",
    "create_encoder",
    "create_model",
    "create_neck",
    "list_encoders",
    "list_models",
    "list_necks",
    "load_state_dict_file",
    "register_encoder",
    "register_model",
    "register_neck",
]
