"""The training configuration: typed sections, a TOML file, ``--set key=value`` overrides.

A run's configuration (trainer.md section 8, house-style principle 13) is a frozen
``TrainConfig`` whose sections are frozen dataclasses too (``loader``, ``optim``, ``schedule``,
``weighting``, ``eval``); every field has a default. It is resolved in layers, each one
overriding the one before::

    defaults  <  TOML file (--config)  <  CLI options (apply_overrides)  <  --set key=value (apply_sets)

and then ``validate``d (value ranges, choices, fields that must agree). A TOML file mirrors the
dataclasses; tables are sections, and dictionary fields are tables too::

    shards = "shards/"
    out = "runs/a"
    tasks = ["seg", "depth"]
    steps = 20000

    [loader]
    batch_size = 16
    image_size = [256, 512]
    mix = "stats.json#0.5"          # or a table: [loader.mix] kitti = 0.3 ...

    [optim]
    lr = 3e-4

    [optim.parts."heads.seg"]       # a part name with a dot is a quoted key
    lr = 1e-3

    [task_options.depth]
    si_lambda = 0.85

Keys are dotted paths into that tree: ``optim.lr``, ``loader.batch_size``,
``weighting.weights.seg``, ``task_options.depth.si_lambda``, ``model_options.repeats``. In
``optim.parts`` the last part of a key is the ``PartConfig`` field and the rest is the part, so
``optim.parts.heads.seg.lr`` sets the ``lr`` of part ``heads.seg``; a whole part is set with a
quoted name (``optim.parts."heads.seg"={lr=1e-3}``). Setting a dictionary field replaces it
(``weighting.weights={seg=1.0}``); setting one of its keys changes that entry only.

Type checking is strict: an integer field takes no float and no boolean, a float field takes
integers (as floats) but no non-finite number, arrays become tuples of the declared length.
An unknown key is an error that lists the keys the section has. ``loader.split``,
``loader.tasks`` and ``loader.infinite`` are set by the trainer (from ``train_split`` /
``eval.split``, ``tasks``, and training vs evaluation): a training configuration leaves them at
their defaults, and giving them in a file, an override or ``--set`` is refused.

Writing: ``to_toml`` (the resolved config next to the outputs, read back by ``load_config``),
``to_dict`` / ``from_dict`` (plain data for checkpoints, readable with
``torch.load(weights_only=True)``), ``differences`` (what ``--resume`` compares). A ``None``
field is written to TOML by leaving its key out, which reads back as ``None`` because every
field that may be ``None`` defaults to ``None`` (a tested invariant).

Registry names (models, tasks, weighting strategies) are not checked here: the trainer checks
them against the registries, which this module does not import.

Every mistake is a ``ConfigError`` (a ``MtlDataError``): one sentence naming where the value
came from (the file, with the line where the TOML parser gives one, ``--set KEY=VALUE`` or the
command-line options), the dotted key, what was expected and the value given.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import os
import re
import sys
import types
import typing
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 has no tomllib; tomli is the package it was adopted from, with the same API
    import tomli as tomllib

from mtl_data.errors import MtlDataError
from mtl_data.schema.validate import SPLITS
from mtl_data.stats.formulas import WEIGHT_RULES
from mtl_data.train.data.loader import LoaderConfig

__all__ = [
    "ConfigError",
    "EvalConfig",
    "LoaderConfig",
    "OptimConfig",
    "PartConfig",
    "ScheduleConfig",
    "TrainConfig",
    "WeightingConfig",
    "apply_overrides",
    "apply_sets",
    "differences",
    "from_dict",
    "load_config",
    "resolve",
    "to_dict",
    "to_toml",
    "validate",
]

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "poly", "step", "constant")
PRECISIONS = ("fp32", "bf16", "fp16")
MODES = ("symmetric", "asymmetric", "stl")
#: parts of a model that take their own learning rate and weight decay, besides ``heads.<task>``
PARTS = ("encoder", "neck", "weighting")
MP_CONTEXTS = ("fork", "spawn", "forkserver")
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")
_BEST_METRIC = re.compile(r"[^/\s]+/[^/\s]+")


# ---- the sections ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PartConfig:
    """Learning rate and weight decay of one part of the model (trainer.md section 5).

    Attributes:
        lr: the part's base learning rate (before the schedule's factor); None = ``optim.lr``.
        weight_decay: the part's weight decay coefficient (decoupled for adamw, L2 for sgd);
            None = ``optim.weight_decay``.
    """

    lr: float | None = None
    weight_decay: float | None = None


@dataclass(frozen=True)
class OptimConfig:
    """The optimizer: one parameter group per part (encoder, neck, each head, weighting).

    Dictionary fields are plain dicts inside a frozen dataclass: treat them as read-only (the
    functions here return new configs and never change one in place).

    Attributes:
        name: ``adamw`` (Loshchilov & Hutter 2019) or ``sgd``.
        lr: base learning rate of every part without its own (before the schedule's factor).
        weight_decay: weight decay coefficient of every part without its own.
        momentum: sgd's momentum (ignored by adamw).
        nesterov: sgd with Nesterov momentum (needs ``momentum > 0``; ignored by adamw).
        betas: adamw's (beta1, beta2) moving-average coefficients.
        eps: adamw's denominator term.
        clip_grad_norm: clip the global L2 norm of the gradients to this; 0 = no clipping.
        parts: per-part overrides, keyed ``encoder``, ``neck``, ``heads.<task>``, ``weighting``.
    """

    name: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    clip_grad_norm: float = 0.0
    parts: dict[str, PartConfig] = field(default_factory=dict)


@dataclass(frozen=True)
class ScheduleConfig:
    """The learning-rate schedule: a factor on every part's base LR, per optimizer step.

    A linear warm-up from ``warmup_factor`` to 1 over ``warmup_steps`` comes first; the shape
    then runs over the remaining steps.

    Attributes:
        name: ``cosine`` (to ``min_lr_ratio``), ``poly`` (``(1 - t) ** power`` to ``min_lr_ratio``),
            ``step`` (times ``gamma`` every ``step_size`` steps) or ``constant``.
        warmup_steps: optimizer steps of linear warm-up; 0 = none.
        warmup_factor: the LR factor at step 0 of the warm-up.
        min_lr_ratio: the floor of cosine and poly, as a fraction of the base LR.
        power: the exponent of poly.
        step_size: optimizer steps between two decays of ``step``.
        gamma: the factor of each decay of ``step``.
    """

    name: str = "cosine"
    warmup_steps: int = 0
    warmup_factor: float = 0.1
    min_lr_ratio: float = 0.0
    power: float = 0.9
    step_size: int = 1000
    gamma: float = 0.1


@dataclass(frozen=True)
class WeightingConfig:
    """How task losses are combined (trainer.md section 4).

    At most one source of static task weights is given: ``weights``, ``stats`` or
    ``first_steps``.

    Attributes:
        name: the weighting strategy's registry name (checked by the trainer).
        weights: static loss weight per task (unitless); tasks left out keep the strategy's own.
        stats: a ``mtl-data stats --json`` report to take the task weights from; None = none.
        rule: which of the report's ``recommendations.task_weights`` rules to take (given with
            ``stats``; the weighting refuses one without the other).
        first_steps: > 0: handcrafted weights from the mean losses of the first N optimizer
            steps (Leang et al. 2020); 0 = off.
        options: the strategy's own options (the fields of its ``Config``: a temperature, a
            GradNorm alpha, frequencies, a schedule ...), e.g. ``--set weighting.options.alpha=1.5``.
    """

    name: str = "equal"
    weights: dict[str, float] = field(default_factory=dict)
    stats: str | None = None
    rule: str | None = None
    first_steps: int = 0
    options: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class AsymmetricConfig:
    """The asymmetric mode's effective batches (UberNet, Kokkinos 2017; the Tartu thesis).

    Attributes:
        k: part -> labelled samples it accumulates gradients over before its optimizer steps:
            ``encoder`` (the encoder with the neck: every sample that labels any task counts)
            and one entry per task (its head: samples that label that task). A part left out
            steps every ``loader.batch_size`` labelled samples.
    """

    k: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation during and after training (trainer.md section 7).

    Attributes:
        split: the split evaluated (``train``, ``val`` or ``test``).
        every: evaluate every N optimizer steps; 0 = only at the end.
        batch_size: samples per evaluation batch; None = the training batch size.
        workers: evaluation loader worker processes; None = ``loader.workers``.
        stl: task -> the run folder of its single-task baseline, for Delta_T.
        best_metric: the ``task/metric`` whose best value selects ``best.pt``; None = the
            headline metric of the first task.
    """

    split: str = "val"
    every: int = 0
    batch_size: int | None = None
    workers: int | None = None
    stl: dict[str, str] = field(default_factory=dict)
    best_metric: str | None = None


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run is made of; ``config.toml`` of a run, and inside its checkpoints.

    Attributes:
        shards: the shards root to train on (required by the trainer).
        out: the run folder (required by the trainer).
        tasks: the tasks to train; empty = every task the training split labels.
        mode: ``symmetric`` (one forward, weighted sum, one backward), ``asymmetric`` (one
            optimizer per part, each stepping after ``asymmetric.k`` labelled samples) or ``stl``
            (one task, for Delta_T baselines; needs exactly one task).
        epoch_steps: optimizer steps per epoch for the strategies that work in epochs (dynamic
            loss scaling, DWA, curricula by epoch); 0 = the steps it takes to see as many samples
            as the training split holds (labelled ones, all ranks).
        init_from: a checkpoint whose model weights start this run (optimizer and step start
            afresh): the search's weight transfer; None = the initialisation.
        model: the model's registry name (``<encoder>-<neck>`` or a registered model).
        model_options: options of the encoder / neck (``create_model(**options)``).
        frame_fusion: with ``loader.frames`` > 1 (MultiNet++ multi-frame input), how the shared
            encoder's features of frame t and its previous frames are combined per level:
            ``sum`` (Chennupati et al.) or ``conv1x1`` (a learned 1x1 convolution over the
            concatenated features).
        task_options: task -> its head / loss options (``create_task(name, **options)``).
        weights: a file of ImageNet weights for the encoder (torchvision names); None = random init.
        steps: optimizer steps to train for (epochs are counted in steps).
        seed: seeds the model's initialisation and every random choice of the trainer (the data
            stream has ``loader.seed``).
        device: ``auto`` (cuda when available, else cpu), ``cpu``, ``cuda`` or ``cuda:N``.
        precision: ``fp32``, ``bf16`` (autocast) or ``fp16`` (autocast and a gradient scaler).
        compile: wrap the model in ``torch.compile``.
        channels_last: channels-last memory format; None = on CUDA.
        log_every: optimizer steps between two rows of ``metrics.csv``.
        save_every: optimizer steps between two checkpoints; 0 = only at the end.
        train_split: the split trained on.
        stats: a ``mtl-data stats --json`` report; when ``loader.mix`` is None, the training mix
            is its recommendation ``"<stats>#<mix_alpha>"``; None = none.
        mix_alpha: the temperature-sampling exponent of that recommendation.
        loader: the data stream (``LoaderConfig``). Its ``split``, ``tasks`` and ``infinite`` are
            set by the trainer (from ``train_split`` / ``eval.split``, ``tasks``, and training vs
            evaluation): they stay at their defaults here.
        optim, schedule, weighting, eval, asymmetric: the sections above.
    """

    shards: str = ""
    out: str = ""
    tasks: tuple[str, ...] = ()
    mode: str = "symmetric"
    epoch_steps: int = 0
    init_from: str | None = None
    model: str = "resnet18-fpn"
    model_options: dict[str, object] = field(default_factory=dict)
    frame_fusion: str = "sum"
    task_options: dict[str, dict[str, object]] = field(default_factory=dict)
    weights: str | None = None
    steps: int = 1000
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    compile: bool = False
    channels_last: bool | None = None
    log_every: int = 10
    save_every: int = 500
    train_split: str = "train"
    stats: str | None = None
    mix_alpha: float = 0.5
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    weighting: WeightingConfig = field(default_factory=WeightingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    asymmetric: AsymmetricConfig = field(default_factory=AsymmetricConfig)


#: (section, field) -> what sets it instead: fields a training configuration may not set.
_TRAINER_SET: dict[tuple[type, str], str] = {
    (LoaderConfig, "split"): "from train_split (training) and eval.split (evaluation)",
    (LoaderConfig, "tasks"): "from tasks",
    (LoaderConfig, "infinite"): "(an endless stream for training, one pass for evaluation)",
    (LoaderConfig, "seed"): "from seed (one seed for the initialisation and the data stream)",
}


class ConfigError(MtlDataError):
    """A configuration mistake.

    Args:
        message: what was wrong: the dotted key, what was expected and the value given.
        keys: the dotted keys involved (to find where their values came from).
        source: where the value came from (a file, ``--set KEY=VALUE``, ...); None = unknown.
    """

    def __init__(self, message: str, keys: Sequence[str] = (), source: str | None = None):
        self.message, self.keys, self.source = message, tuple(keys), source
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.source}: {self.message}" if self.source else self.message

    def __reduce__(self):  # keep the fields when a worker process sends the error back
        return (type(self), (self.message, self.keys, self.source))

    def located(self, source: str | None) -> ConfigError:
        """This error with its source set (an error that has one keeps it)."""
        return self if self.source or not source else ConfigError(self.message, self.keys, source)


# ---- how each field type is checked, parsed and descended into ---------------------------------
#
# A field's annotation becomes a _Spec (_spec(type), cached): scalars come from a table by type,
# composites from a table by their typing origin (tuple, dict, Mapping, unions) and dataclasses
# are sections. Every layer goes through the same specs: TOML tables and checkpoint dicts are
# coerced onto the defaults, overrides are coerced at a dotted key, --set text is parsed there.

_NONE_WORDS = frozenset({"none", "null"})
_BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_MISSING = object()

Leaf = Callable[["_Spec", str, object], object]  # (spec at the key, dotted key, current value) -> new value


def _join(key: str, part: str) -> str:
    return f"{key}.{part}" if key else part


def _toml_value(text: str) -> object:
    """``text`` read as one TOML value (``[0.9, 0.99]``, ``{a = 1}``, ``"s"``, ``3``), else _MISSING."""
    try:
        doc = tomllib.loads(f"v = {text}")
    except tomllib.TOMLDecodeError:
        return _MISSING
    return doc["v"] if list(doc) == ["v"] else _MISSING


def _at(spec: _Spec, parts: Sequence[str], key: str, current: object, leaf: Leaf) -> object:
    """The value at ``key`` with ``leaf`` applied at ``key.parts`` (at ``key`` itself when no parts)."""
    return spec.descend(parts, key, current, leaf) if parts else leaf(spec, key, current)


class _Spec:
    """How the values of one field type are checked, parsed and descended into.

    ``current`` is always the value being replaced (a section merges a table into it).
    """

    expected = ""  # what a value must be, for messages ("an integer")
    descends = False  # whether dotted keys go inside its values

    def accepts(self, value: object) -> bool:
        """The value has this type's shape (used to pick a member of a union)."""
        raise NotImplementedError

    def claims(self, text: str) -> bool:
        """``--set`` text written in this type's own syntax (a union gives it the text first)."""
        return False

    def coerce(self, value: object, key: str, current: object) -> object:
        """The value checked and in canonical form (tuples, floats, dicts, sections)."""
        raise NotImplementedError

    def parse(self, text: str, key: str, current: object) -> object:
        """``--set`` text read as this type, checked like ``coerce``."""
        raise NotImplementedError

    def descend(self, parts: Sequence[str], key: str, current: object, leaf: Leaf) -> object:
        raise ConfigError(f"unknown key {_join(key, parts[0])}: {key} is {self.expected}, not a table", (key,))

    def bad(self, key: str, value: object) -> ConfigError:
        return ConfigError(f"{key} must be {self.expected}, got {value!r}", (key,))


class _Scalar(_Spec):
    """A scalar type.

    Args:
        expected: what a value must be, for messages.
        check: whether a value is of this type (floats: finite too).
        canonical: the accepted value in canonical form (an int as a float, a path as a str).
        read: ``--set`` text -> value; ValueError or KeyError when the text is not one.
    """

    def __init__(
        self,
        expected: str,
        check: Callable[[object], bool],
        canonical: Callable[[object], object],
        read: Callable[[str], object],
        quoted: bool = False,
    ):
        self.expected, self.check, self.canonical, self.read = expected, check, canonical, read
        self.quoted = quoted

    def accepts(self, value):
        return self.check(value)

    def claims(self, text):
        # a quoted string is a string even where a table could read it ("a=b.json#0.5")
        return self.quoted and text.lstrip()[:1] in ("'", '"')

    def coerce(self, value, key, current):
        if not self.check(value):
            raise self.bad(key, value)
        return self.canonical(value)

    def parse(self, text, key, current):
        try:
            value = self.read(text.strip())
        except (ValueError, KeyError):
            raise self.bad(key, text) from None
        return self.coerce(value, key, current)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite(value: object) -> bool:
    # inf and nan are refused: they cannot be meant as a rate or a size, and to_toml refuses them
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value) if isinstance(value, float) else abs(value) <= sys.float_info.max


def _read_str(text: str) -> str:
    """Verbatim, or a quoted TOML string (``"none"`` is the string where ``none`` means None)."""
    if text[:1] in ("'", '"'):
        value = _toml_value(text)
        if isinstance(value, str):
            return value
    return text


_SCALARS: dict[type, _Scalar] = {
    int: _Scalar("an integer", _is_int, int, int),
    float: _Scalar("a finite number", _is_finite, float, float),
    bool: _Scalar(
        "a boolean (true/false, 1/0, yes/no)", lambda v: isinstance(v, bool), bool, lambda t: _BOOL_WORDS[t.lower()]
    ),
    str: _Scalar("a string", lambda v: isinstance(v, (str, os.PathLike)), os.fspath, _read_str, quoted=True),
}


class _NoneSpec(_Spec):
    expected = "none"

    def accepts(self, value):
        return value is None

    def coerce(self, value, key, current):
        if value is None:
            return value
        raise self.bad(key, value)

    def parse(self, text, key, current):
        if text.strip().lower() in _NONE_WORDS:
            return None
        raise self.bad(key, text)


_PLAIN_SCALARS = (str, bool, int)


def _plain_data(value: object, key: str) -> object:
    """A free-form option value as TOML can hold it: scalars, lists (from tuples too) and tables."""
    if isinstance(value, _PLAIN_SCALARS) or _is_finite(value):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain_data(v, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return {k: _plain_data(v, _join(key, k)) for k, v in value.items()}
    raise _ANY.bad(key, value)


class _AnySpec(_Spec):
    """``object``: a free-form option (``model_options``, ``task_options``); dotted keys go into tables."""

    expected = "a string, finite number, boolean, array or table"
    descends = True

    def accepts(self, value):
        return True

    def coerce(self, value, key, current):
        return _plain_data(value, key)

    def parse(self, text, key, current):
        # A TOML literal (2, 0.5, true, [1, 2], {a = 1}, "s"); anything else is a bare string.
        value = _toml_value(text.strip())
        return text.strip() if value is _MISSING else self.coerce(value, key, current)

    def descend(self, parts, key, current, leaf):
        if current is None:
            current = {}
        if not isinstance(current, Mapping):
            raise ConfigError(f"unknown key {_join(key, parts[0])}: {key} is {current!r}, not a table", (key,))
        name = parts[0]
        return {**current, name: _at(self, parts[1:], _join(key, name), current.get(name), leaf)}


_NONE = _NoneSpec()
_ANY = _AnySpec()


class _TupleSpec(_Spec):
    """``tuple[X, Y]`` (a fixed length) or ``tuple[X, ...]``; read from TOML arrays and lists."""

    def __init__(self, args: tuple):
        self.variadic = len(args) == 2 and args[1] is Ellipsis
        self.items = (_spec(args[0]),) if self.variadic else tuple(_spec(a) for a in args)
        if self.variadic:
            self.expected = f"an array (each {self.items[0].expected})"
        else:
            self.expected = f"an array of {len(self.items)} values (each {self.items[0].expected})"
        # Integer pairs also read as "256x512", the form the CLI's --image-size takes.
        self.separator = r"[,xX]" if all(s is _SCALARS[int] for s in self.items) else ","

    def _item(self, i: int) -> _Spec:
        return self.items[0] if self.variadic else self.items[i]

    def accepts(self, value):
        return isinstance(value, (list, tuple))

    def claims(self, text):
        return text.lstrip().startswith("[")

    def coerce(self, value, key, current):
        if not self.accepts(value) or (not self.variadic and len(value) != len(self.items)):
            raise self.bad(key, value)
        return tuple(self._item(i).coerce(v, f"{key}[{i}]", None) for i, v in enumerate(value))

    def parse(self, text, key, current):
        text = text.strip()
        if self.claims(text):
            value = _toml_value(text)
            if value is _MISSING:
                raise self.bad(key, text)
            return self.coerce(value, key, current)
        pieces = [p.strip() for p in re.split(self.separator, text)] if text else []
        if not self.variadic and len(pieces) != len(self.items):
            raise self.bad(key, text)
        return tuple(self._item(i).parse(p, f"{key}[{i}]", None) for i, p in enumerate(pieces))


class _DictSpec(_Spec):
    """``dict[str, V]``: a TOML table, ``{k = v, ...}`` or ``k=v,k=v`` on ``--set``; replaced whole."""

    descends = True

    def __init__(self, args: tuple):
        self.value = _spec(args[1])
        self.expected = f"a table (each value {self.value.expected})"

    def accepts(self, value):
        return isinstance(value, Mapping)

    def claims(self, text):
        return text.lstrip().startswith("{") or "=" in text

    def coerce(self, value, key, current):
        if not isinstance(value, Mapping):
            raise self.bad(key, value)
        out = {}
        for name, item in value.items():
            if not isinstance(name, str):
                raise ConfigError(f"{key} must have string keys, got {name!r}", (key,))
            out[name] = self.value.coerce(item, _join(key, name), None)
        return out

    def parse(self, text, key, current):
        text = text.strip()
        if text.startswith("{"):
            value = _toml_value(text)
            if value is _MISSING:
                raise self.bad(key, text)
            return self.coerce(value, key, current)
        out = {}
        for piece in text.split(",") if text else []:
            name, sep, item = (s.strip() for s in piece.partition("="))
            if not sep or not name:
                raise ConfigError(
                    f"{key} must be {self.expected}, written {{k = v, ...}} or k=v,k=v, got {text!r}", (key,)
                )
            out[name] = self.value.parse(item, _join(key, name), None)
        return out

    def descend(self, parts, key, current, leaf):
        current = current if isinstance(current, Mapping) else {}
        if isinstance(self.value, _SectionSpec) and len(parts) > 1:
            # Entry names may hold dots (heads.seg): the last part is the field of the entry.
            name, rest = ".".join(parts[:-1]), parts[-1:]
        else:
            name, rest = parts[0], parts[1:]
        return {**current, name: _at(self.value, rest, _join(key, name), current.get(name), leaf)}


class _UnionSpec(_Spec):
    """``X | Y | None``: ``none``/``null`` on ``--set`` where None is allowed, else the first
    member that reads the value (strings last, since any text is a string)."""

    def __init__(self, args: tuple):
        self.members = tuple(_spec(a) for a in args)
        self.expected = " or ".join(m.expected for m in self.members)
        self.descends = any(m.descends for m in self.members)
        strings = [m for m in self.members if m is _SCALARS[str]]
        others = [m for m in self.members if m is not _NONE and m not in strings]
        self.text_order = others + strings  # any text reads as a string: strings go last...
        self.claim_order = strings + others  # ...but a quoted text is a string first

    def accepts(self, value):
        return any(m.accepts(value) for m in self.members)

    def claims(self, text):
        return any(m.claims(text) for m in self.members)

    def coerce(self, value, key, current):
        candidates = [m for m in self.members if m.accepts(value)]
        if not candidates:
            raise self.bad(key, value)
        first_error = None
        for member in candidates:
            try:
                return member.coerce(value, key, current)
            except ConfigError as exc:
                first_error = first_error or exc
        raise first_error

    def parse(self, text, key, current):
        if _NONE in self.members and text.strip().lower() in _NONE_WORDS:
            return None
        for member in self.claim_order:
            if member.claims(text):  # its own syntax: its error is the one to report
                return member.parse(text, key, current)
        for member in self.text_order:
            try:
                return member.parse(text, key, current)
            except ConfigError:
                continue
        raise self.bad(key, text)

    def descend(self, parts, key, current, leaf):
        # loader.mix.kitti=0.3 makes the mix a table even when it was a string or None.
        members = [m for m in self.members if m.descends]
        if not members:
            return super().descend(parts, key, current, leaf)
        member = next((m for m in members if m.accepts(current)), members[0])
        return member.descend(parts, key, current if member.accepts(current) else None, leaf)


class _SectionSpec(_Spec):
    """A dataclass: a TOML table merged into the current section; unknown keys are errors."""

    descends = True

    def __init__(self, cls: type):
        self.cls = cls
        self.expected = f"a table of {cls.__name__} fields"

    @functools.cached_property
    def fields(self) -> dict[str, _Spec]:
        hints = typing.get_type_hints(self.cls)
        return {f.name: _spec(hints[f.name]) for f in dataclasses.fields(self.cls)}

    @functools.cached_property
    def settable(self) -> tuple[str, ...]:
        return tuple(name for name in self.fields if (self.cls, name) not in _TRAINER_SET)

    def check_name(self, name: object, key: str) -> None:
        full = _join(key, str(name))
        if name not in self.fields:
            close = difflib.get_close_matches(str(name), self.settable, n=1)
            hint = f" (did you mean {_join(key, close[0])}?)" if close else ""
            raise ConfigError(
                f"unknown key {full}{hint}; {key or 'the config'} has {', '.join(self.settable)}", (full,)
            )
        if (self.cls, name) in _TRAINER_SET:
            raise ConfigError(
                f"{full} is set by the trainer {_TRAINER_SET[self.cls, name]}; leave it out of the training config",
                (full,),
            )

    def build(self, base: object, changes: Mapping[str, object], key: str) -> object:
        try:
            return dataclasses.replace(base, **changes)
        except (MtlDataError, ValueError) as exc:  # a section's own __post_init__ check
            # Its messages start with the field's name ("batch_size must be >= 1"): make it dotted.
            name, _, rest = str(exc).partition(" ")
            if name in self.fields:
                raise ConfigError(f"{_join(key, name)} {rest}", (_join(key, name),)) from None
            raise ConfigError(f"{key or 'config'}: {exc}", (key,)) from None

    def accepts(self, value):
        return isinstance(value, (Mapping, self.cls))

    def claims(self, text):
        return text.lstrip().startswith("{")

    def coerce(self, value, key, current):
        if isinstance(value, self.cls):
            # A whole section replaces the current one; its fields are checked like a table's
            # (a trainer-set field at its default is no mistake).
            default = self.cls()
            value = {
                name: getattr(value, name)
                for name in self.fields
                if name in self.settable or getattr(value, name) != getattr(default, name)
            }
            current = default
        if not isinstance(value, Mapping):
            raise self.bad(key, value)
        base = current if isinstance(current, self.cls) else self.cls()
        changes = {}
        for name, item in value.items():
            self.check_name(name, key)
            changes[name] = self.fields[name].coerce(item, _join(key, name), getattr(base, name))
        return self.build(base, changes, key)

    def parse(self, text, key, current):
        value = _toml_value(text.strip())
        if not isinstance(value, Mapping):
            raise self.bad(key, text)
        return self.coerce(value, key, current)

    def descend(self, parts, key, current, leaf):
        name = parts[0]
        self.check_name(name, key)
        base = current if isinstance(current, self.cls) else self.cls()
        new = _at(self.fields[name], parts[1:], _join(key, name), getattr(base, name), leaf)
        return self.build(base, {name: new}, key)


_ATOMS: dict[object, _Spec] = {**_SCALARS, type(None): _NONE, object: _ANY}
_COMPOSITES: dict[object, Callable[[tuple], _Spec]] = {
    tuple: _TupleSpec,
    dict: _DictSpec,
    Mapping: _DictSpec,
    typing.Union: _UnionSpec,
    types.UnionType: _UnionSpec,
}


@functools.cache
def _spec(tp: object) -> _Spec:
    """The spec of an annotation (a resolved type, not a string)."""
    atom = _ATOMS.get(tp)
    if atom is not None:
        return atom
    if dataclasses.is_dataclass(tp):
        return _SectionSpec(tp)
    build = _COMPOSITES.get(typing.get_origin(tp))
    if build is None:
        raise TypeError(f"config fields of type {tp!r} are not supported")  # a bug in a section, not a user error
    return build(typing.get_args(tp))


def _root() -> _SectionSpec:
    return _spec(TrainConfig)


def _split_key(key: str) -> list[str]:
    """A dotted key's parts, read as TOML reads a dotted key (``optim.parts."heads.seg".lr``)."""
    doc = _toml_value(f"{{{key} = 0}}") if key.strip() else _MISSING
    parts = []
    while isinstance(doc, dict) and len(doc) == 1:
        ((name, doc),) = doc.items()
        parts.append(name)
    if doc != 0 or not parts:
        raise ConfigError(f"{key!r} is not a dotted key like optim.lr or loader.batch_size", ())
    return parts


def _leaf_keys(data: Mapping, prefix: str = "") -> Iterator[str]:
    """The dotted keys of the values in a nested table (an empty table is a value)."""
    for name, value in data.items():
        key = _join(prefix, name)
        if isinstance(value, Mapping) and value:
            yield from _leaf_keys(value, key)
        else:
            yield key


# ---- reading -----------------------------------------------------------------------------------


def _read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError("no such config file", (), str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message ends with "(at line L, column C)" where it knows the place
        text = str(exc)
        where = re.search(r"\s*\(at line (\d+), column (\d+)\)$", text)
        if where is None:
            raise ConfigError(f"invalid TOML: {text}", (), str(path)) from None
        message = text[: where.start()]
        raise ConfigError(f"invalid TOML: {message} (column {where[2]})", (), f"{path}:{where[1]}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text (byte {exc.start}); TOML files are UTF-8", (), str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the config file ({exc.strerror})", (), str(path)) from None


def _from_table(data: object, source: str, base: TrainConfig | None = None) -> TrainConfig:
    """A TOML table as a config, merged into ``base`` (its tables into the sections) when given."""
    try:
        return _root().coerce(data, "", base)
    except ConfigError as exc:
        raise exc.located(source) from None


def load_config(path: str | os.PathLike) -> TrainConfig:
    """The config of a TOML file: its tables are the sections, every key left out keeps its default.

    Only types are checked here (a file may leave ``shards`` to the command line); ``resolve``
    validates the result.

    Raises:
        ConfigError: a missing or unreadable file, invalid TOML (with the line), an unknown key,
            a value of the wrong type or a field the trainer sets.
    """
    return _from_table(_read_toml(Path(path)), str(path))


def _apply(config: TrainConfig, key: str, leaf: Leaf, source: str) -> TrainConfig:
    try:
        return _at(_root(), _split_key(key), "", config, leaf)
    except ConfigError as exc:
        raise exc.located(source) from None


def apply_overrides(
    config: TrainConfig, overrides: Mapping[str, object], *, source: str = "command-line options"
) -> TrainConfig:
    """``config`` with the values of ``overrides`` (dotted key -> typed value) set, in order.

    Values are checked like TOML values: ``{"optim.lr": 3e-4, "loader.image_size": (256, 512),
    "tasks": ("seg",), "shards": Path(...)}`` (a path is taken for a string). ``None`` is a value
    (allowed where the field allows it): leave out the options the user did not give.

    Raises:
        ConfigError: an unknown key, a value of the wrong type or a field the trainer sets.
    """
    for key, value in overrides.items():
        config = _apply(config, key, lambda spec, k, current, v=value: spec.coerce(v, k, current), source)
    return config


def apply_sets(config: TrainConfig, sets: Sequence[str]) -> TrainConfig:
    """``config`` with ``--set key=value`` items applied, in order (a later one wins).

    The text is read as the field's type: integers; floats (``1e-4``); booleans
    (``true``/``false``, ``1``/``0``, ``yes``/``no``); strings verbatim (or quoted as in TOML);
    ``none`` or ``null`` where the field allows None; arrays as ``a,b`` or ``[a, b]`` (integer
    pairs also as ``256x512``); tables as ``{k = v}`` or ``k=v,k=v``; free-form options
    (``model_options``, ``task_options``) as a TOML literal, else a bare string.

    Raises:
        ConfigError: an item without ``=``, an unknown key, text that is not of the field's type
            or a field the trainer sets (each names the ``--set`` item).
    """
    for item in sets:
        key, sep, text = item.partition("=")
        source = f"--set {item}"
        if not sep or not key.strip():
            raise ConfigError("expected key=value, e.g. optim.lr=3e-4", (), source)
        config = _apply(config, key.strip(), lambda spec, k, current, t=text: spec.parse(t, k, current), source)
    return config


def resolve(
    config_file: str | os.PathLike | None,
    overrides: Mapping[str, object] = types.MappingProxyType({}),
    sets: Sequence[str] = (),
    preset: tuple[str, Mapping[str, object]] | None = None,
) -> TrainConfig:
    """The run's config: defaults < ``preset`` < ``config_file`` < ``overrides`` < ``sets``, validated.

    ``preset``: (its name, its dotted overrides), e.g. ``("thesis", presets.PRESETS["thesis"])``.

    A validation error names where the offending value came from (the file, the options or
    the ``--set`` item that set it last).

    Raises:
        ConfigError: anything ``load_config``, ``apply_overrides``, ``apply_sets`` or ``validate``
            refuses.
    """
    origins: list[tuple[str, str]] = []  # (dotted key, where its value came from), in order
    config = TrainConfig()
    if preset is not None:
        name, values = preset
        config = apply_overrides(config, values, source=f"--preset {name}")
        origins += [(".".join(_split_key(key)), f"--preset {name}") for key in values]
    if config_file is not None:
        data = _read_toml(Path(config_file))
        config = _from_table(data, str(config_file), base=config)
        origins += [(key, str(config_file)) for key in _leaf_keys(data)]
    config = apply_overrides(config, overrides)
    origins += [(".".join(_split_key(key)), "command-line options") for key in overrides]
    config = apply_sets(config, sets)
    origins += [(".".join(_split_key(item.partition("=")[0])), f"--set {item}") for item in sets]
    try:
        validate(config)
    except ConfigError as exc:
        raise exc.located(_origin(exc.keys, origins)) from None
    return config


def _origin(keys: Sequence[str], origins: Sequence[tuple[str, str]]) -> str | None:
    """Where the values of ``keys`` were set last (None: they are defaults)."""
    found: list[str] = []
    for key in keys:
        key = re.sub(r"\[\d+\]$", "", key)  # optim.betas[0] was set as optim.betas
        for set_key, source in reversed(origins):
            if set_key == key or set_key.startswith(key + ".") or key.startswith(set_key + "."):
                if source not in found:
                    found.append(source)
                break
    return " and ".join(found) or None


# ---- validation --------------------------------------------------------------------------------


def _need(ok: bool, message: str, *keys: str) -> None:
    if not ok:
        raise ConfigError(message, keys)


def _at_least(value: float, low: float, key: str, note: str = "") -> None:
    _need(value >= low, f"{key} must be >= {low}{note}, got {value!r}", key)


def _between(value: float, low: float, high: float, key: str, *, high_open: bool = False) -> None:
    ok = low <= value < high if high_open else low <= value <= high
    _need(ok, f"{key} must be in [{low}, {high}{')' if high_open else ']'}, got {value!r}", key)


def _one_of(value: object, choices: Collection[str], key: str) -> None:
    _need(value in choices, f"{key} must be one of {', '.join(choices)}, got {value!r}", key)


def _named(value: str | None, key: str) -> None:
    _need(value is None or value.strip() != "", f"{key} is empty; leave it out for none", key)


def _among_tasks(names: Collection[str], tasks: tuple[str, ...], key: str) -> None:
    """Task-keyed entries must be trained tasks when the tasks are given (a typo is not ignored)."""
    extra = [n for n in names if n not in tasks]
    _need(not tasks or not extra, f"{key} names {', '.join(extra)}, not among tasks ({', '.join(tasks)})", key, "tasks")


#: ``frame_fusion`` choices (``models/multiframe.py`` builds them)
FRAME_FUSIONS = ("sum", "conv1x1")


def _check_run(c: TrainConfig) -> None:
    _need(
        len(set(c.tasks)) == len(c.tasks) and all(c.tasks),
        f"tasks must be distinct task names, got {list(c.tasks)!r}",
        "tasks",
    )
    _one_of(c.mode, MODES, "mode")
    _need(
        c.mode != "stl" or len(c.tasks) == 1,
        f"mode 'stl' trains exactly one task, got tasks {list(c.tasks)!r} (give one task)",
        "mode",
        "tasks",
    )
    _need(c.model.strip() != "", "model is empty; name a registered model, e.g. resnet18-fpn", "model")
    _one_of(c.frame_fusion, FRAME_FUSIONS, "frame_fusion")
    _named(c.weights, "weights")
    _named(c.stats, "stats")
    _at_least(c.steps, 1, "steps")
    _at_least(c.epoch_steps, 0, "epoch_steps", " (0 = one pass over the training split)")
    _named(c.init_from, "init_from")
    _at_least(c.seed, 0, "seed")
    _need(
        _DEVICE.fullmatch(c.device) is not None, f"device must be auto, cpu, cuda or cuda:N, got {c.device!r}", "device"
    )
    _one_of(c.precision, PRECISIONS, "precision")
    _at_least(c.log_every, 1, "log_every")
    _at_least(c.save_every, 0, "save_every", " (0 = only at the end)")
    _one_of(c.train_split, SPLITS, "train_split")
    _at_least(c.mix_alpha, 0.0, "mix_alpha")
    _need(all(name.strip() for name in c.model_options), "model_options has an empty key", "model_options")
    _among_tasks(c.task_options, c.tasks, "task_options")


def _check_loader(c: LoaderConfig) -> None:
    # LoaderConfig checks batch_size, seed and workers itself; the rest mirrors TransformConfig
    # and TargetConfig, so that a bad value is refused when the config is resolved, by its key.
    h, w = c.image_size
    _need(
        h >= 1 and w >= 1,
        f"loader.image_size must be (H, W) >= 1 pixels, got {list(c.image_size)!r}",
        "loader.image_size",
    )
    _between(c.flip_p, 0.0, 1.0, "loader.flip_p")
    _between(c.jitter, 0.0, 1.0, "loader.jitter", high_open=True)
    for name in ("grid", "anchors", "max_boxes", "max_lanes", "lane_rows", "prefetch_factor"):
        _at_least(getattr(c, name), 1, f"loader.{name}")
    _at_least(c.shuffle_buffer, 0, "loader.shuffle_buffer", " (0 or 1 = no shuffle buffer)")
    if c.mp_context is not None:
        _one_of(c.mp_context, MP_CONTEXTS, "loader.mp_context")


def _check_optim(c: OptimConfig, tasks: tuple[str, ...]) -> None:
    _one_of(c.name, OPTIMIZERS, "optim.name")
    _at_least(c.lr, 0.0, "optim.lr")
    _at_least(c.weight_decay, 0.0, "optim.weight_decay")
    _between(c.momentum, 0.0, 1.0, "optim.momentum", high_open=True)
    _need(
        not (c.name == "sgd" and c.nesterov and c.momentum == 0),
        "optim.nesterov needs optim.momentum > 0, got momentum 0.0",
        "optim.nesterov",
        "optim.momentum",
    )
    for i, beta in enumerate(c.betas):
        _between(beta, 0.0, 1.0, f"optim.betas[{i}]", high_open=True)
    _need(c.eps > 0, f"optim.eps must be > 0, got {c.eps!r}", "optim.eps")
    _at_least(c.clip_grad_norm, 0.0, "optim.clip_grad_norm", " (0 = no clipping)")
    for name, part in c.parts.items():
        key = f"optim.parts.{name}"
        head = name.startswith("heads.") and len(name) > len("heads.")
        _need(
            name in PARTS or head, f"optim.parts has {name!r}; the parts are {', '.join(PARTS)} and heads.<task>", key
        )
        if head:
            _among_tasks([name[len("heads.") :]], tasks, key)
        if part.lr is not None:
            _at_least(part.lr, 0.0, f"{key}.lr")
        if part.weight_decay is not None:
            _at_least(part.weight_decay, 0.0, f"{key}.weight_decay")


def _check_schedule(c: ScheduleConfig) -> None:
    _one_of(c.name, SCHEDULES, "schedule.name")
    _at_least(c.warmup_steps, 0, "schedule.warmup_steps")
    _between(c.warmup_factor, 0.0, 1.0, "schedule.warmup_factor")
    _between(c.min_lr_ratio, 0.0, 1.0, "schedule.min_lr_ratio")
    _need(c.power > 0, f"schedule.power must be > 0, got {c.power!r}", "schedule.power")
    _at_least(c.step_size, 1, "schedule.step_size")
    _need(c.gamma > 0, f"schedule.gamma must be > 0, got {c.gamma!r}", "schedule.gamma")


def _check_weighting(c: WeightingConfig, tasks: tuple[str, ...]) -> None:
    _need(c.name.strip() != "", "weighting.name is empty; name a weighting strategy, e.g. equal", "weighting.name")
    for task, weight in c.weights.items():
        _at_least(weight, 0.0, f"weighting.weights.{task}")
    _among_tasks(c.weights, tasks, "weighting.weights")
    _named(c.stats, "weighting.stats")
    if c.rule is not None:
        _one_of(c.rule, tuple(WEIGHT_RULES), "weighting.rule")
    _at_least(c.first_steps, 0, "weighting.first_steps", " (0 = off)")
    given = [
        name
        for name, on in (
            ("weights", bool(c.weights)),
            ("stats", c.stats is not None),
            ("first_steps", c.first_steps > 0),
        )
        if on
    ]
    _need(
        len(given) <= 1,
        f"weighting.{' and weighting.'.join(given)} are each a source of static task weights; give one",
        *(f"weighting.{name}" for name in given),
    )


def _check_eval(c: EvalConfig, tasks: tuple[str, ...]) -> None:
    _one_of(c.split, SPLITS, "eval.split")
    _at_least(c.every, 0, "eval.every", " (0 = only at the end)")
    if c.batch_size is not None:
        _at_least(c.batch_size, 1, "eval.batch_size")
    if c.workers is not None:
        _at_least(c.workers, 0, "eval.workers")
    for task, run in c.stl.items():
        _need(run.strip() != "", f"eval.stl.{task} is empty; give the STL run folder", f"eval.stl.{task}")
    _among_tasks(c.stl, tasks, "eval.stl")
    if c.best_metric is not None:
        _need(
            _BEST_METRIC.fullmatch(c.best_metric) is not None,
            f"eval.best_metric must be task/metric, e.g. seg/miou, got {c.best_metric!r}",
            "eval.best_metric",
        )
        _among_tasks([c.best_metric.split("/")[0]], tasks, "eval.best_metric")


def _check_asymmetric(c: AsymmetricConfig, tasks: tuple[str, ...]) -> None:
    for part, k in c.k.items():
        _at_least(k, 1, f"asymmetric.k.{part}")
    _among_tasks([p for p in c.k if p != "encoder"], tasks, "asymmetric.k")


def validate(config: TrainConfig) -> None:
    """Check a config: types (a config built in code is checked as a file would be), ranges,
    choices and fields that must agree.

    Not checked: registry names (models, tasks, weightings: the trainer checks them against the
    registries), files (the trainer opens them) and ``shards`` / ``out`` being given (the CLI
    and the trainer ask for them).

    Raises:
        ConfigError: the first problem found, naming its dotted key(s).
    """
    _root().coerce(config, "", None)
    _check_run(config)
    _check_loader(config.loader)
    _check_optim(config.optim, config.tasks)
    _check_schedule(config.schedule)
    _check_weighting(config.weighting, config.tasks)
    _check_eval(config.eval, config.tasks)
    _check_asymmetric(config.asymmetric, config.tasks)


# ---- writing -----------------------------------------------------------------------------------


def _plain(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _plain(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if (type(value), f.name) not in _TRAINER_SET
        }
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def to_dict(config: TrainConfig) -> dict:
    """The config as plain data (str, int, float, bool, list, dict, None) for checkpoints, which
    ``torch.load(weights_only=True)`` reads; ``from_dict`` is its exact inverse. The fields the
    trainer sets (``loader.split``, ``loader.tasks``, ``loader.infinite``) are left out.

    Raises:
        ConfigError: a field of the wrong type (a config built in code).
    """
    return _plain(_root().coerce(config, "", None))  # coerce: the canonical types, checked


def from_dict(data: Mapping[str, object], *, source: str = "saved config") -> TrainConfig:
    """The config ``to_dict`` gave (a key left out keeps its default, e.g. from an older version).

    Raises:
        ConfigError: an unknown key or a value of the wrong type.
    """
    return _from_table(data, source)


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
# TOML basic strings: escape the quote, the backslash and every control character.
_ESCAPES = {
    **{c: f"\\u{c:04x}" for c in (*range(0x20), 0x7F)},
    **{
        ord(k): v
        for k, v in {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}.items()
    },
}


def _toml_string(text: str) -> str:
    return '"' + text.translate(_ESCAPES) + '"'


def _toml_key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else _toml_string(name)


def _toml_float(value: float, key: str) -> str:
    if not math.isfinite(value):
        raise ConfigError(f"{key} is {value!r}; TOML config files hold finite numbers only", (key,))
    return repr(value)  # repr round-trips exactly and always has a '.' or an exponent


_INLINE: dict[type, Callable[[object, str], str]] = {
    bool: lambda v, key: "true" if v else "false",
    int: lambda v, key: str(v),
    float: _toml_float,
    str: lambda v, key: _toml_string(v),
    list: lambda v, key: "[" + ", ".join(_inline(x, f"{key}[{i}]") for i, x in enumerate(v)) + "]",
    dict: lambda v, key: "{" + ", ".join(f"{_toml_key(k)} = {_inline(x, _join(key, k))}" for k, x in v.items()) + "}",
}


def _inline(value: object, key: str) -> str:
    write = _INLINE.get(type(value))
    if write is None:
        raise ConfigError(f"{key} is {value!r}, which a TOML config file cannot hold", (key,))
    return write(value, key)


def _write_table(lines: list[str], path: tuple[str, ...], table: Mapping[str, object]) -> None:
    # Values first, then sub-tables: in TOML every key after a [header] belongs to that table.
    values = [(k, v) for k, v in table.items() if v is not None and not isinstance(v, dict)]
    tables = [(k, v) for k, v in table.items() if isinstance(v, dict)]
    if path and (values or not tables):  # an empty table is written, so that it reads back
        lines += ["", "[" + ".".join(_toml_key(p) for p in path) + "]"]
    key = ".".join(path)
    lines += [f"{_toml_key(k)} = {_inline(v, _join(key, k))}" for k, v in values]
    for name, sub in tables:
        _write_table(lines, path + (name,), sub)


def to_toml(config: TrainConfig) -> str:
    """The config as a TOML file that ``load_config`` reads back equal.

    Every field is written (the file documents the run), but None: a None field is left out,
    which reads back as None since every field that may be None defaults to None. Floats are
    written with ``repr`` (exact); dictionaries become tables.

    Raises:
        ConfigError: a field of the wrong type, or a non-finite float (a config built in code).
    """
    lines: list[str] = []
    _write_table(lines, (), to_dict(config))
    return "\n".join(lines).lstrip("\n") + "\n"


def _without_none(value: object) -> object:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    return [_without_none(v) for v in value] if isinstance(value, list) else value


def _shown(value: object, key: str) -> str:
    return "(unset)" if value is _MISSING or value is None else _inline(_without_none(value), key)


def _same(a: object, b: object) -> bool:
    """Equal and of the same types throughout (a free-form option's true is not its 1)."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def _diff(a: object, b: object, key: str, ignore: tuple[str, ...], out: list[str]) -> None:
    if any(key == i or key.startswith(i + ".") for i in ignore):
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for name in list(a) + [k for k in b if k not in a]:
            _diff(a.get(name, _MISSING), b.get(name, _MISSING), _join(key, name), ignore, out)
    elif not _same(a, b):
        out.append(f"{key}: {_shown(a, key)} -> {_shown(b, key)}")


def differences(a: TrainConfig, b: TrainConfig, ignore: Collection[str] = ()) -> list[str]:
    """The dotted keys whose values differ, as ``"optim.lr: 0.001 -> 0.0003"``, in field order.

    Tables are compared key by key; a value is shown as TOML writes it, ``(unset)`` for None or
    for a table entry one side lacks (``weighting.weights.seg: (unset) -> 2.0``).

    Args:
        a, b: the configs (e.g. the saved one and the new one, for ``--resume``).
        ignore: dotted keys (and the keys under them) left out of the comparison, e.g. ``steps``.
    """
    out: list[str] = []
    _diff(to_dict(a), to_dict(b), "", tuple(ignore), out)
    return out
