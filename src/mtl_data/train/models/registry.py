"""Models by name, timm style: ``create_model("resnet18-fpn", tasks=["seg", "lane"])``.

Three registries, filled by decorators in the modules of this package (each imported by the
package's ``__init__``, so adding an encoder or a neck is adding one file):

* ``register_encoder(name)``: ``factory(config) -> Encoder`` (``base.Encoder``);
* ``register_neck(name)``: ``factory(in_channels, out_channels, config) -> Neck``;
* ``register_model(name)``: whole custom models, ``factory(tasks, config, *, weights,
  neck_channels) -> MultiTaskModel`` (e.g. a real-time two-pathway network).

Every encoder composes with every neck: the model ``"<encoder>-<neck>"`` is that encoder, that
neck and one head per task (``MultiTaskModel``). ``config`` is the entry's typed options
dataclass (``config=`` of the decorator; the factory gets no config argument when it has none);
``create_model``'s ``**options`` fill it, and a name that no part of the model takes is an error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from mtl_data.errors import MtlDataError
from mtl_data.train.models.base import Encoder, Neck
from mtl_data.train.models.multitask import MultiTaskModel
from mtl_data.train.tasks import Task, create_task, list_tasks, task_class

#: channels of every neck output unless ``neck_channels`` says otherwise (FPN's d = 256, and
#: the thesis's BiFPN width).
DEFAULT_NECK_CHANNELS = 256

Factory = TypeVar("Factory", bound=Callable[..., Any])


@dataclass(frozen=True)
class _Entry:
    factory: Callable[..., Any]
    config: type | None  # a dataclass whose fields all have defaults, or None: no options


_ENCODERS: dict[str, _Entry] = {}
_NECKS: dict[str, _Entry] = {}
_MODELS: dict[str, _Entry] = {}


def _register(table: dict[str, _Entry], kind: str, name: str, config: type | None) -> Callable[[Factory], Factory]:
    if config is not None and not dataclasses.is_dataclass(config):
        raise TypeError(f"{kind} {name!r}: config must be a dataclass, got {config!r}")

    def decorator(factory: Factory) -> Factory:
        if name in _ENCODERS or name in _NECKS or name in _MODELS:
            raise ValueError(f"{kind} {name!r} registered twice")
        # "<encoder>-<neck>" must read one way only.
        if kind != "model" and "-" in name:
            raise ValueError(f"{kind} name {name!r} must not contain '-' (it joins encoder and neck names)")
        table[name] = _Entry(factory, config)
        return factory

    return decorator


def register_encoder(name: str, *, config: type | None = None) -> Callable[[Factory], Factory]:
    """Decorator: ``factory(config) -> Encoder`` (or ``factory()`` without ``config``) is ``name``."""
    return _register(_ENCODERS, "encoder", name, config)


def register_neck(name: str, *, config: type | None = None) -> Callable[[Factory], Factory]:
    """Decorator: ``factory(in_channels, out_channels[, config]) -> Neck`` is ``name``."""
    return _register(_NECKS, "neck", name, config)


def register_model(name: str, *, config: type | None = None) -> Callable[[Factory], Factory]:
    """Decorator for a whole model: ``factory(tasks, [config,] *, weights, neck_channels)``.

    ``tasks`` is a list of built ``Task`` objects; ``weights`` a path or None; ``neck_channels``
    an int or None (the factory raises ``MtlDataError`` for one it cannot honour). The factory
    returns a ``MultiTaskModel`` (or a subclass whose ``parts()`` covers its extra parameters).
    """
    if "-" in name and name.split("-", 1)[0] in _ENCODERS:
        raise ValueError(f"model name {name!r} looks like an encoder-neck composition")
    return _register(_MODELS, "model", name, config)


def list_models() -> list[str]:
    """Every ``"<encoder>-<neck>"`` composition and every custom model, sorted."""
    return sorted([f"{e}-{n}" for e in _ENCODERS for n in _NECKS] + list(_MODELS))


def list_encoders() -> list[str]:
    """The registered encoders, sorted."""
    return sorted(_ENCODERS)


def list_necks() -> list[str]:
    """The registered necks, sorted."""
    return sorted(_NECKS)


def create_encoder(name: str, *, weights: str | Path | None = None, **options: Any) -> Encoder:
    """The encoder ``name`` with its options, weights loaded from ``weights`` when given.

    Raises:
        MtlDataError: an unknown encoder or option; a weights file that does not fit.
    """
    entry = _lookup(_ENCODERS, "encoder", name)
    encoder = _call(entry, f"encoder {name}", options)
    if weights is not None:
        encoder.load_weights(weights, what=f"encoder {name}")
    return encoder


def create_neck(name: str, in_channels: Sequence[int], out_channels: int | None = None, **options: Any) -> Neck:
    """The neck ``name`` over maps of ``in_channels``, giving ``out_channels`` (default 256) each.

    Raises:
        MtlDataError: an unknown neck or option.
    """
    entry = _lookup(_NECKS, "neck", name)
    out = DEFAULT_NECK_CHANNELS if out_channels is None else out_channels
    if not isinstance(out, int) or isinstance(out, bool) or out < 1:
        raise MtlDataError(f"neck {name}: neck_channels must be a positive integer, got {out!r}")
    return _call(entry, f"neck {name}", options, tuple(in_channels), out)


def create_model(
    name: str,
    tasks: Sequence[str | Task],
    *,
    classes: Mapping[str, Sequence[str]] | None = None,
    weights: str | Path | None = None,
    neck_channels: int | None = None,
    task_options: Mapping[str, Mapping[str, Any]] | None = None,
    **options: Any,
) -> MultiTaskModel:
    """A multi-task model by name: encoder + neck + one head per task.

    Args:
        name: ``"<encoder>-<neck>"`` or a custom model (``list_models()``).
        tasks: task names (built with ``create_task``) or built ``Task`` objects, in output order;
            may be empty (encoder + neck only: ``forward`` returns ``{}``).
        classes: class names per ``classes.json`` table (``{"seg": [...], "det2d": [...]}``), as
            the shards' ``classes.json`` holds them; a task whose table is absent uses its
            unified defaults.
        weights: a state dict file for the encoder (a torchvision ResNet's, ``fc`` dropped).
        neck_channels: channels of every neck output (default 256).
        task_options: per task name, overrides of its ``Config`` fields.
        **options: fields of the encoder's and the neck's config dataclasses (or the custom
            model's), e.g. ``zero_init_residual=True``, ``repeats=2``.

    Raises:
        MtlDataError: an unknown model, task or option (one sentence listing the valid choices),
            a task given twice, or a weights file that does not fit.
    """
    compositions = {f"{e}-{n}": (e, n) for e in _ENCODERS for n in _NECKS}
    if name not in _MODELS and name not in compositions:
        raise MtlDataError(f"unknown model {name!r}; choose from {', '.join(list_models()) or 'none'}")
    built = _build_tasks(tasks, classes or {}, task_options or {})
    if name in _MODELS:
        entry = _MODELS[name]
        args = [built] if entry.config is None else [built, _config(entry.config, f"model {name}", options)]
        return entry.factory(*args, weights=weights, neck_channels=neck_channels)
    enc_name, neck_name = compositions[name]
    enc_entry, neck_entry = _ENCODERS[enc_name], _NECKS[neck_name]
    fields = {part: _fields(entry.config) for part, entry in (("encoder", enc_entry), ("neck", neck_entry))}
    unknown = sorted(set(options) - fields["encoder"] - fields["neck"])
    if unknown:
        known = sorted(fields["encoder"] | fields["neck"])
        raise MtlDataError(f"model {name}: unknown option(s) {', '.join(unknown)}; known: {', '.join(known) or 'none'}")
    encoder = create_encoder(enc_name, weights=weights, **{k: v for k, v in options.items() if k in fields["encoder"]})
    neck = create_neck(
        neck_name, encoder.channels, neck_channels, **{k: v for k, v in options.items() if k in fields["neck"]}
    )
    return MultiTaskModel(encoder, neck, built)


# ---- helpers ------------------------------------------------------------------------------------


def _lookup(table: dict[str, _Entry], kind: str, name: str) -> _Entry:
    try:
        return table[name]
    except KeyError:
        raise MtlDataError(f"unknown {kind} {name!r}; choose from {', '.join(sorted(table)) or 'none'}") from None


def _call(entry: _Entry, what: str, options: Mapping[str, Any], *args: Any) -> Any:
    if entry.config is None:
        _config(None, what, options)  # raises on any option
        return entry.factory(*args)
    return entry.factory(*args, _config(entry.config, what, options))


def _fields(config: type | None) -> set[str]:
    return set() if config is None else {f.name for f in dataclasses.fields(config)}


def _config(config: type | None, what: str, options: Mapping[str, Any]) -> Any:
    """``config(**options)``, checking names and, against each field's default, types.

    Raises:
        MtlDataError: an unknown option, or a value of the wrong type (a bool for an int, a
            str for a float...), naming the option and the expected type.
    """
    fields = {f.name: f for f in dataclasses.fields(config)} if config is not None else {}
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise MtlDataError(
            f"{what}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(fields)) or 'none'}"
        )
    for key, value in options.items():
        field = fields[key]
        default = field.default if field.default is not dataclasses.MISSING else None
        if default is None:
            continue
        expected = type(default)
        # bool is an int to Python, not to a user; an int is a fine float.
        accepted = (int, float) if expected is float else expected
        if isinstance(value, bool) is not (expected is bool) or not isinstance(value, accepted):
            raise MtlDataError(f"{what}: option {key} must be a {expected.__name__}, got {value!r}")
    return config(**options) if config is not None else None


def _build_tasks(
    tasks: Sequence[str | Task], classes: Mapping[str, Sequence[str]], task_options: Mapping[str, Mapping[str, Any]]
) -> list[Task]:
    if isinstance(tasks, str):  # "seg" would otherwise be read as the tasks s, e, g
        tasks = [tasks]
    names = [t for t in tasks if isinstance(t, str)]
    extra = sorted(set(task_options) - set(names))
    if extra:
        raise MtlDataError(
            f"task_options for {', '.join(extra)}, which is not among the tasks given by name "
            f"({', '.join(names) or 'none'})"
        )
    built: list[Task] = []
    for item in tasks:
        if isinstance(item, Task):
            built.append(item)
        elif isinstance(item, str):
            table = task_class(item).class_table
            built.append(
                create_task(item, classes=classes.get(table) if table else None, **dict(task_options.get(item, {})))
            )
        else:
            raise MtlDataError(
                f"a task is a name ({', '.join(list_tasks()) or 'none registered'}) or a Task object, got {item!r}"
            )
    return built  # MultiTaskModel refuses a task given twice
