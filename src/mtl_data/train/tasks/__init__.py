"""One module per task (head, loss, metric, prediction decoding and export) on ``base.Task``.

Every module of this package is imported here, so that its ``@register_task`` runs: adding a
task is adding one file. ``create_task(name)`` builds one; ``list_tasks()`` names them.
"""

import importlib
import pkgutil

from mtl_data.train.tasks.base import (
    FeatureSpec,
    Metric,
    PredictionWriter,
    Task,
    create_task,
    list_tasks,
    masked_mean,
    task_class,
    view_of,
)

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base" and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "FeatureSpec",
    "Metric",
    "PredictionWriter",
    "Task",
    "create_task",
    "list_tasks",
    "masked_mean",
    "task_class",
    "view_of",
]
