"""Weighting strategies by name: one module per strategy on ``base.Weighting``, and a registry.

``create_weighting("static", tasks=["seg", "depth"], first_steps=100)`` builds one;
``list_weightings()`` names them. Every module of this package is imported here, so that its
``@register_weighting`` runs: adding a strategy is adding one file.
"""

import importlib
import pkgutil

from mtl_data.train.weighting.base import (
    NoConfig,
    Weighting,
    create_weighting,
    list_weightings,
    mean_over_ranks,
    register_weighting,
    weighted_sum,
    weighting_class,
)

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base" and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "NoConfig",
    "Weighting",
    "create_weighting",
    "list_weightings",
    "mean_over_ranks",
    "register_weighting",
    "weighted_sum",
    "weighting_class",
]
