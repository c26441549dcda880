"""``mtl-train search``: evolutionary meta-learning of task weights and asynchronous frequencies.

Leang et al. 2020, "Dynamic Task Weighting Methods for Multi-task Networks in Autonomous Driving
Systems" (ITSC 2020), sections IV-C and IV-D: the task weights and the tasks' asynchronous
back-propagation frequencies are hyper-parameters, searched by "an efficient and extended
version of Evolution Strategies [Rechenberg]" that handles numeric and integer variables
together, "exploits the gradient information with respect to the target metric similar to
Natural Evolution Strategies [Wierstra et al.]" and applies "a Tabu search method [Glover] to
prevent evaluating parts of the search space multiple times". Each trial is a real training run
(``loop.train``) with the ``async`` weighting strategy; its fitness is the geometric mean of the
tasks' validation headline metrics; and each trial continues from the best model so far
(*dynamic weight transfer*). The paper gives the sizes (initial population 4, 4 new
configurations per generation, 2 parents each) but not the operators; where it is silent the
choices below are this module's, and say so.

**Genome** (one per trial), for the run's tasks ``t`` in the trainer's task order:

* ``e_t``, the weight exponent, in ``[log10 min_t, log10 max_t]`` on a grid of
  ``10^-RESOLUTION`` (0.01 decades, 2.3 % of a weight): "w'_t = 10^w_t with w'_t in [min_t,
  max_t] ... optimized on an exponential scale". The weights the trial trains with are
  normalised to sum 1, "to leave the overall magnitude in the loss unchanged":
  ``w_t = 10^e_t / sum_s 10^e_s`` (computed with ``e_t - max_s e_s`` for range). The grid is
  this module's: it makes the tabu list exact and the csv round-trip exact.
* ``nu_t``, the asynchronous frequency (task t's loss is applied every ``nu_t`` steps), an
  integer in ``1 .. max_frequency``: "a numeric variable in the range of 1 to 10, followed by a
  rounding operation to an integer" -- it is recombined and mutated as a real number and rounded
  (half up).

**Generations.** Generation 0 is the initial population: ``population`` genomes drawn uniformly
from the grid (exponents) and from ``1 .. max_frequency`` (frequencies). Each later generation
has ``offspring`` children; trial numbers run on across generations (generation g >= 1 holds
trials ``population + (g - 1) * offspring`` onwards). A generation is planned from the trials
before it, all evaluated, so the ``offspring`` trials of one generation can be evaluated
together (``Engine``).

**Selection** ((mu + lambda) elitism, the ES "plus" strategy; the paper: parents are chosen among
the best): the elite is the ``population`` best trials evaluated so far (every generation, the
initial population included; failed trials never), ranked by fitness, the earlier trial first
on a tie. Each child draws ``parents`` distinct elite members uniformly at random (all of them
when the elite is smaller); with no successful trial yet, a child is a uniform random genome.

**Recombination with a search-gradient step** (the paper's NES-like use of the target metric's
gradient; the exact form is this module's). With the P parents ranked best first (k = 0 .. P-1)
and their centred rank utilities ``u_k = (P - 1 - 2k) / (2 (P - 1))`` (NES fitness shaping: from
+1/2 for the best to -1/2 for the worst, summing to 0), the child's mean is the parents' mean
``m`` moved along the NES estimate of the fitness gradient at ``m``::

    x_child = m + ETA * sum_k u_k (x_k - m) = sum_k (1/P + ETA u_k) x_k        ETA = 1/2

for the exponent vector and the frequency vector alike: a weighted intermediate recombination
towards the better parents (two parents: 3/4 of the better one, 1/4 of the other). One parent:
its genome.

**Mutation** (Gaussian, as in Rechenberg's ES; a fixed step, since under weight transfer the
later trials improve by training longer, which would fool a success-rate step adaptation):
``e_t += N(0, (mutation * (log10 max_t - log10 min_t))^2)``, ``nu_t += N(0, (mutation *
(max_frequency - 1))^2)``, ``mutation = 0.1`` by default; then clipped to the bounds and put on
the grid (exponents rounded to ``RESOLUTION`` decimals, frequencies rounded half up).

**Tabu list** (Glover 1986): every genome planned so far -- evaluated, failed, or earlier in
the same generation -- is tabu. Two genomes are the same configuration when their *normalised*
weights and their frequencies are: the key is the exponents relative to their maximum (on the
grid, so exact) and the frequencies. A child that is tabu is drawn again, parents and noise
afresh, up to ``MAX_TRIES`` times; then a uniform random genome, up to ``MAX_TRIES`` times;
then the search stops with an error (the space is exhausted at this resolution).

**Fitness** (the paper: "the geometric mean between the detection mAP and the segmentation
mIoU"), over every task of the run, of its headline metric ``M_t`` on the evaluation split
(``RUN/eval.json`` of the trial, ``tasks/base.py`` ``headline``)::

    F = (prod_t g_t)^(1/T)      g_t = M_t                 higher is better (mIoU, mAP, top-1, DS)
                                g_t = M_ref,t / M_t       lower is better (depth abs_rel, steer MAE)

``M_ref,t`` is the first trial's value of that metric (the first one, in trial order, where it
is finite and > 0). The ratio is unitless (degrees or metres cancel), and because F is a
geometric mean the choice of ``M_ref`` multiplies every trial's F by the same factor: it never
changes which trial is best, only that F of the first trial is the higher-is-better metrics' mean
at that depth error. A geometric mean needs values >= 0: a higher-is-better value < 0, a
lower-is-better value <= 0 or a non-finite value leaves F undefined (the trial counts as failed,
with the reason); a higher-is-better value of 0 gives F = 0 (a task that learned nothing is the
worst compromise).

**Dynamic weight transfer**: each trial starts from ``RUN/checkpoints/last.pt`` of the best
trial evaluated before it starts (``TrainConfig.init_from``; the first trial, and any before a
success, from ``base.init_from``); last.pt is the model its fitness was measured on. The
optimizer, the LR schedule and the step start afresh; the data stream is ``base.seed``'s in every
trial, so trials are compared on the same batches.

**Files**::

    SEARCH/search.json         the search's settings and base config (a resume must match them)
    SEARCH/trials.csv          one row per trial, rewritten atomically after each
    SEARCH/best.toml           the best trial's config (``config.to_toml``; its init_from is the
                               checkpoint it continued from)
    SEARCH/trials/NNN/         each trial's run folder (``run`` module)

``trials.csv`` columns: ``trial, generation, parents`` (trial numbers, best first, ``;``
separated), ``weight/<task>`` (normalised), ``frequency/<task>``, ``fitness`` (``nan`` when
failed), ``<task>/<metric>`` (each headline), ``run`` (relative to SEARCH), ``transfer_from``
(the trial whose last.pt it started from; empty: ``base.init_from``), ``exponent/<task>``,
``error``. Nothing in it depends on where SEARCH is or on timing, so a search resumed after an
interruption writes the same file as an uninterrupted one.

**Resume** rebuilds the search from ``trials.csv``: every random draw of generation g comes from
a generator seeded with ``(seed, g)`` and its inputs are the trials before it (read back
exactly: floats are written with ``repr``), so a generation is planned again identically and the
trials it already holds are checked against the plan; a trial folder without a csv row (the
trial that was interrupted) is deleted and run again. A trial that fails with ``MtlDataError``
(``NonFiniteLoss`` included) gets fitness NaN and its error in the csv; the search goes on.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtl_data.errors import MtlDataError
from mtl_data.files import read_json_document, write_atomic
from mtl_data.train.config import TrainConfig, WeightingConfig, differences, from_dict, to_dict, to_toml, validate

logger = logging.getLogger(__name__)

#: the weighting strategy every trial trains with: options ``weights`` and ``frequencies``.
STRATEGY = "async"
#: decimals of a weight exponent (log10): the search's grid and the tabu list's resolution.
RESOLUTION = 2
#: the step along the search gradient in the recombination (module docstring).
ETA = 0.5
#: draws of a child (then of a random genome) before a tabu genome gives up.
MAX_TRIES = 100
SEARCH_FILE, TRIALS_FILE, BEST_FILE, TRIALS_DIR = "search.json", "trials.csv", "best.toml", "trials"
FORMAT = 1
#: (min, max) of a task's raw weight 10^e when the search is not told otherwise.
DEFAULT_WEIGHT_RANGE = (1e-2, 1e2)

_GRID = 10**RESOLUTION


# ---- the genome ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Genome:
    """One configuration of the search (module docstring).

    Attributes:
        exponents: per task, log10 of its raw weight, on the ``10^-RESOLUTION`` grid.
        frequencies: per task, nu_t >= 1: its loss is applied every nu_t steps.
    """

    exponents: tuple[float, ...]
    frequencies: tuple[int, ...]

    def weights(self) -> tuple[float, ...]:
        """The task weights, normalised to sum 1: ``10^e_t / sum_s 10^e_s``."""
        top = max(self.exponents)
        raw = [10.0 ** (e - top) for e in self.exponents]
        total = math.fsum(raw)
        return tuple(r / total for r in raw)

    def key(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """What the tabu list compares: the exponents relative to their maximum, in grid steps
        (the same normalised weights), and the frequencies."""
        steps = [round(e * _GRID) for e in self.exponents]
        top = max(steps)
        return tuple(s - top for s in steps), tuple(self.frequencies)


@dataclass(frozen=True)
class SearchSpace:
    """Where genomes live.

    Attributes:
        tasks: the run's tasks, in the trainer's order.
        bounds: per task, the exponent range in grid steps: (ceil(log10 min * G), floor(log10 max * G)).
        max_frequency: the largest nu_t.
    """

    tasks: tuple[str, ...]
    bounds: tuple[tuple[int, int], ...]
    max_frequency: int

    @classmethod
    def create(
        cls,
        tasks: Sequence[str],
        weight_range: Mapping[str, tuple[float, float]] | tuple[float, float],
        max_frequency: int,
    ) -> SearchSpace:
        """The space of ``tasks`` with ``weight_range`` (one (min, max) for every task, or a table
        task -> (min, max) whose ``"*"`` entry, else ``DEFAULT_WEIGHT_RANGE``, is for the tasks it
        leaves out) and frequencies ``1 .. max_frequency``.

        Raises:
            MtlDataError: fewer than two tasks, a range that is not 0 < min <= max (finite), a
                range for a task the search does not have, or ``max_frequency`` < 1.
        """
        tasks = tuple(tasks)
        if len(tasks) < 2:
            raise MtlDataError(f"search: task weighting needs at least two tasks, got {', '.join(tasks) or 'none'}")
        if isinstance(max_frequency, bool) or not isinstance(max_frequency, int) or max_frequency < 1:
            raise MtlDataError(f"search: max_frequency must be an integer >= 1, got {max_frequency!r}")
        ranges = _ranges(tasks, weight_range)
        bounds = []
        for task in tasks:
            low, high = ranges[task]
            lo = math.ceil(round(math.log10(low) * _GRID, 6))  # round(): 3 * 100 is 300.00000000000006
            hi = math.floor(round(math.log10(high) * _GRID, 6))
            if lo > hi:  # a range narrower than the grid: its middle
                lo = hi = round((math.log10(low) + math.log10(high)) / 2 * _GRID)
            bounds.append((lo, hi))
        return cls(tasks, tuple(bounds), max_frequency)

    def genome(self, exponents: Iterable[float], frequencies: Iterable[float]) -> Genome:
        """Real-valued exponents and frequencies clipped to the bounds and put on the grid
        (exponents to the nearest grid point, frequencies rounded half up)."""
        steps = [min(max(math.floor(e * _GRID + 0.5), lo), hi) for e, (lo, hi) in zip(exponents, self.bounds)]
        nus = [min(max(math.floor(f + 0.5), 1), self.max_frequency) for f in frequencies]
        return Genome(tuple(s / _GRID for s in steps), tuple(int(n) for n in nus))

    def random(self, rng: np.random.Generator) -> Genome:
        """A genome drawn uniformly from the grid and from ``1 .. max_frequency``."""
        steps = [int(rng.integers(lo, hi + 1)) for lo, hi in self.bounds]
        nus = [int(rng.integers(1, self.max_frequency + 1)) for _ in self.tasks]
        return Genome(tuple(s / _GRID for s in steps), tuple(nus))

    def ranges(self) -> dict[str, list[float]]:
        """The exponent bounds per task, as ``[log10 min, log10 max]`` on the grid."""
        return {t: [lo / _GRID, hi / _GRID] for t, (lo, hi) in zip(self.tasks, self.bounds)}


def _ranges(tasks: tuple[str, ...], weight_range) -> dict[str, tuple[float, float]]:
    if isinstance(weight_range, Mapping):
        extra = sorted(set(weight_range) - set(tasks) - {"*"})
        if extra:
            raise MtlDataError(
                f"search: a weight range for {', '.join(extra)}, not a task of the search ({', '.join(tasks)})"
            )
        other = weight_range.get("*", DEFAULT_WEIGHT_RANGE)
        ranges = {t: weight_range.get(t, other) for t in tasks}
    else:
        ranges = dict.fromkeys(tasks, weight_range)
    for task, pair in ranges.items():
        ok = (
            isinstance(pair, (tuple, list))
            and len(pair) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in pair)
        )
        if not ok or not 0 < pair[0] <= pair[1]:
            raise MtlDataError(
                f"search: the weight range of {task} must be (min, max) with 0 < min <= max, got {pair!r}"
            )
    return {t: (float(p[0]), float(p[1])) for t, p in ranges.items()}


# ---- the operators ------------------------------------------------------------------------------


def recombine(parents: Sequence[Genome], eta: float = ETA) -> tuple[list[float], list[float]]:
    """The child's real-valued exponents and frequencies before mutation (module docstring):
    ``sum_k (1/P + eta u_k) x_k`` with the centred rank utilities ``u_k`` of the parents, which
    are given best first."""
    p = len(parents)
    if p == 0:
        raise ValueError("recombine needs at least one parent")
    utilities = [0.0] if p == 1 else [(p - 1 - 2 * k) / (2 * (p - 1)) for k in range(p)]
    coeffs = [1 / p + eta * u for u in utilities]
    exponents = [
        math.fsum(c * g.exponents[i] for c, g in zip(coeffs, parents)) for i in range(len(parents[0].exponents))
    ]
    frequencies = [
        math.fsum(c * g.frequencies[i] for c, g in zip(coeffs, parents)) for i in range(len(parents[0].frequencies))
    ]
    return exponents, frequencies


def mutate(
    space: SearchSpace, exponents: Sequence[float], frequencies: Sequence[float], scale: float, rng: np.random.Generator
) -> Genome:
    """Gaussian mutation: ``scale`` times each variable's range as the standard deviation, then
    clipped and put on the grid (``SearchSpace.genome``)."""
    noise_e = rng.standard_normal(len(space.tasks))  # (T,)
    noise_f = rng.standard_normal(len(space.tasks))  # (T,)
    mutated_e = [e + float(z) * scale * (hi - lo) / _GRID for e, z, (lo, hi) in zip(exponents, noise_e, space.bounds)]
    mutated_f = [f + float(z) * scale * (space.max_frequency - 1) for f, z in zip(frequencies, noise_f)]
    return space.genome(mutated_e, mutated_f)


class Tabu:
    """The genomes planned so far, compared by ``Genome.key`` (Glover 1986)."""

    def __init__(self, genomes: Iterable[Genome] = ()):
        self.keys = {g.key() for g in genomes}

    def __contains__(self, genome: Genome) -> bool:
        return genome.key() in self.keys

    def add(self, genome: Genome) -> None:
        self.keys.add(genome.key())

    def draw(
        self, make: Callable[[], tuple[tuple[int, ...], Genome]], space: SearchSpace, rng: np.random.Generator
    ) -> tuple[tuple[int, ...], Genome]:
        """``make()`` (parents, genome) until the genome is not tabu, ``MAX_TRIES`` times; then a
        random genome without parents, ``MAX_TRIES`` times. The genome drawn becomes tabu.

        Raises:
            MtlDataError: every draw was tabu (the space is exhausted at the search's resolution).
        """
        for attempt in range(2 * MAX_TRIES):
            parents, genome = make() if attempt < MAX_TRIES else ((), space.random(rng))
            if genome not in self:
                self.add(genome)
                return parents, genome
        raise MtlDataError(
            f"search: {2 * MAX_TRIES} draws in a row gave configurations already tried; the space "
            f"({len(self.keys)} tried) is exhausted at 10^-{RESOLUTION} in the exponents: widen "
            "--weight-range or --max-frequency, or run fewer trials"
        )


# ---- fitness ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Headline:
    """A task's headline metric (``tasks/base.py``): the fitness reads it from ``eval.json``."""

    task: str
    metric: str
    higher_is_better: bool

    @property
    def column(self) -> str:
        return f"{self.task}/{self.metric}"


def headlines(tasks: Sequence[str]) -> tuple[Headline, ...]:
    from mtl_data.train.tasks import task_class

    return tuple(Headline(t, task_class(t).metric_keys[0], task_class(t).higher_is_better) for t in tasks)


def fitness(values: Mapping[str, float], higher_is_better: Mapping[str, bool], reference: Mapping[str, float]) -> float:
    """The geometric mean of the tasks' goodness (module docstring).

    Args:
        values: task -> its headline metric.
        higher_is_better: task -> the metric's direction.
        reference: task -> ``M_ref`` for the lower-is-better tasks.

    Raises:
        MtlDataError: a value for which the geometric mean is undefined, naming the task.
    """
    goods = []
    for task, value in values.items():
        if value is None or not math.isfinite(value):
            raise MtlDataError(f"{task}'s headline metric is {value}; the fitness is undefined")
        if higher_is_better[task]:
            if value < 0:
                raise MtlDataError(f"{task}'s headline metric is {value} < 0; a geometric mean needs values >= 0")
            goods.append(value)
        else:
            if value <= 0:
                raise MtlDataError(
                    f"{task}'s headline metric (lower is better) is {value}; its ratio to the "
                    "reference needs a value > 0"
                )
            goods.append(reference[task] / value)
    if not goods:
        raise MtlDataError("no task to compute a fitness over")
    return math.prod(goods) ** (1 / len(goods))


# ---- trials -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialSpec:
    """A planned trial.

    Attributes:
        trial: its number (0-based, over the whole search).
        generation: 0 for the initial population.
        parents: the parents' trial numbers, best first (empty for a random genome).
        genome: its configuration.
    """

    trial: int
    generation: int
    parents: tuple[int, ...]
    genome: Genome


@dataclass(frozen=True)
class TrialRecord:
    """An evaluated trial: a row of ``trials.csv``.

    Attributes:
        spec: the planned trial.
        transfer_from: the trial whose ``last.pt`` it started from; None: ``base.init_from``.
        metrics: ``task/metric`` -> the headline metric (NaN when not measured).
        fitness: the fitness; NaN when the trial failed.
        error: why it failed ("" when it did not).
    """

    spec: TrialSpec
    transfer_from: int | None
    metrics: dict[str, float]
    fitness: float
    error: str = ""

    @property
    def trial(self) -> int:
        return self.spec.trial

    @property
    def ok(self) -> bool:
        return math.isfinite(self.fitness)

    def describe(self, tasks: Sequence[str]) -> str:
        """One line: the trial, its configuration and its outcome."""
        s = self.spec
        weights = " ".join(f"{t} {w:.3g}" for t, w in zip(tasks, s.genome.weights()))
        freqs = " ".join(f"{t} {f}" for t, f in zip(tasks, s.genome.frequencies))
        origin = f"parents {','.join(map(str, s.parents))}" if s.parents else "random"
        head = f"trial {s.trial:03d} (generation {s.generation}, {origin}): weights {weights}; frequencies {freqs}"
        if not self.ok:
            return f"{head} -> failed: {self.error}"
        metrics = ", ".join(f"{k} {v:.4g}" for k, v in self.metrics.items())
        return f"{head} -> fitness {self.fitness:.4g} ({metrics})"


def best_of(records: Iterable[TrialRecord]) -> TrialRecord | None:
    """The successful trial with the highest fitness (the earlier one on a tie); None without any."""
    ranked = elite(records, 1)
    return ranked[0] if ranked else None


def elite(records: Iterable[TrialRecord], size: int) -> list[TrialRecord]:
    """The ``size`` best successful trials, best first (the earlier trial first on a tie)."""
    return sorted((r for r in records if r.ok), key=lambda r: (-r.fitness, r.trial))[:size]


def choose_parents(best: Sequence[TrialRecord], parents: int, rng: np.random.Generator) -> list[TrialRecord]:
    """``parents`` distinct members of the elite ``best`` (best first), uniformly; all when fewer."""
    picked = sorted(int(i) for i in rng.choice(len(best), size=min(parents, len(best)), replace=False))
    return [best[i] for i in picked]


@dataclass(frozen=True)
class Settings:
    """The search's own settings (``search`` arguments), saved in ``search.json``."""

    steps_per_trial: int
    population: int
    offspring: int
    parents: int
    max_frequency: int
    mutation: float
    seed: int

    def generation_of(self, trial: int) -> int:
        return 0 if trial < self.population else 1 + (trial - self.population) // self.offspring

    def first_trial(self, generation: int) -> int:
        return 0 if generation == 0 else self.population + (generation - 1) * self.offspring

    def size(self, generation: int) -> int:
        return self.population if generation == 0 else self.offspring


def plan_generation(
    space: SearchSpace, settings: Settings, history: Sequence[TrialRecord], generation: int
) -> list[TrialSpec]:
    """The trials of ``generation``, planned from the trials before it (``history``, all of
    them): random genomes for generation 0, children of the elite after (module docstring).
    Every draw comes from a generator seeded with ``(seed, generation)``.

    Raises:
        MtlDataError: the space is exhausted (``Tabu.draw``).
    """
    rng = np.random.default_rng([settings.seed, generation])
    tabu = Tabu(r.spec.genome for r in history)
    best = elite(history, settings.population) if generation else []

    def child() -> tuple[tuple[int, ...], Genome]:
        if not best:
            return (), space.random(rng)
        chosen = choose_parents(best, settings.parents, rng)
        exponents, frequencies = recombine([r.spec.genome for r in chosen])
        return tuple(r.trial for r in chosen), mutate(space, exponents, frequencies, settings.mutation, rng)

    first = settings.first_trial(generation)
    specs = []
    for trial in range(first, first + settings.size(generation)):
        parents, genome = tabu.draw(child, space, rng)
        specs.append(TrialSpec(trial, generation, parents, genome))
    return specs


# ---- running trials -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What a trial's training gave: ``eval.json``'s metrics, or the error that stopped it."""

    metrics: dict[str, dict[str, float]] | None
    error: str = ""


def run_trial(config: TrainConfig) -> Outcome:
    """Train one trial in this process; a ``MtlDataError`` (``NonFiniteLoss`` too) is its outcome."""
    from mtl_data.train.loop import train

    try:
        result = train(config)
    except MtlDataError as exc:
        logger.warning("%s: failed: %s", config.out, exc)
        return Outcome(None, f"{type(exc).__name__}: {exc}")
    return Outcome(result["eval"]["metrics"])


class Search:
    """A search in progress: its files, the trials evaluated, the best so far.

    An engine (``Engine``) asks it for a trial's config (``trial_config`` with the transfer
    source of its choice, normally ``transfer_source()``: the best so far) and hands back each
    trial's outcome, in trial order, to ``record``.
    """

    def __init__(
        self,
        base: TrainConfig,
        out: Path,
        space: SearchSpace,
        settings: Settings,
        records: list[TrialRecord],
        on_trial: Callable[[str, TrialRecord], None] | None,
    ):
        self.base, self.out, self.space, self.settings = base, out, space, settings
        self.headlines = headlines(space.tasks)
        self.records = records
        self.on_trial = on_trial

    def run_dir(self, trial: int) -> Path:
        return self.out / TRIALS_DIR / f"{trial:03d}"

    def checkpoint(self, trial: int) -> Path:
        return self.run_dir(trial) / "checkpoints" / "last.pt"

    def transfer_source(self) -> TrialRecord | None:
        """The trial a new trial continues from: the best so far (dynamic weight transfer)."""
        return best_of(self.records)

    def trial_config(self, spec: TrialSpec, source: TrialRecord | None) -> TrainConfig:
        """The training config of ``spec``: ``base`` with the trial's folder, steps, weighting and
        initial weights."""
        genome, tasks = spec.genome, self.space.tasks
        weighting = WeightingConfig(
            name=STRATEGY,
            options={
                "weights": dict(zip(tasks, genome.weights())),
                "frequencies": dict(zip(tasks, genome.frequencies)),
            },
        )
        init_from = self.base.init_from if source is None else str(self.checkpoint(source.trial))
        return dataclasses.replace(
            self.base,
            out=str(self.run_dir(spec.trial)),
            steps=self.settings.steps_per_trial,
            weighting=weighting,
            init_from=init_from,
        )

    def record(self, spec: TrialSpec, source: TrialRecord | None, outcome: Outcome) -> TrialRecord:
        """Score a finished trial, append it to ``trials.csv``, rewrite ``best.toml``."""
        if spec.trial != len(self.records):
            raise RuntimeError(
                f"trial {spec.trial} recorded after {len(self.records)} trials (engines record in order)"
            )
        metrics = {h.column: math.nan for h in self.headlines}
        value, error = math.nan, outcome.error
        if outcome.metrics is not None:
            metrics.update({h.column: _number(outcome.metrics.get(h.task, {}).get(h.metric)) for h in self.headlines})
            try:
                value = self._fitness(metrics)
            except MtlDataError as exc:
                error = str(exc)
        record = TrialRecord(spec, None if source is None else source.trial, metrics, value, error)
        self.records.append(record)
        write_atomic(self.out / TRIALS_FILE, _csv_text(self.records, self.headlines, self.space.tasks))
        if best_of(self.records) is record:
            self.write_best()
        line = record.describe(self.space.tasks)
        if self.on_trial is None:
            logger.info("%s", line)
        else:
            self.on_trial(line, record)
        return record

    def write_best(self) -> None:
        """``best.toml``: the config of the best trial so far (nothing while none succeeded)."""
        best = best_of(self.records)
        if best is not None:
            source = None if best.transfer_from is None else self.records[best.transfer_from]
            write_atomic(self.out / BEST_FILE, to_toml(self.trial_config(best.spec, source)))

    def _fitness(self, metrics: Mapping[str, float]) -> float:
        reference = {}
        for h in self.headlines:
            if not h.higher_is_better:
                earlier = [r.metrics[h.column] for r in self.records if _positive(r.metrics[h.column])]
                reference[h.task] = earlier[0] if earlier else metrics[h.column]
        return fitness(
            {h.task: metrics[h.column] for h in self.headlines},
            {h.task: h.higher_is_better for h in self.headlines},
            reference,
        )


def _number(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def _positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


#: evaluates planned trials and hands each one's outcome to ``Search.record``, in trial order.
Engine = Callable[[Sequence[TrialSpec], Search], None]


def in_process(specs: Sequence[TrialSpec], search: Search) -> None:
    """The default engine: one trial after another in this process, each continuing from the best
    trial so far, the trials of its own generation included.

    A parallel engine evaluates the specs (one generation) at once: each continues from the best
    trial at the generation's start, and the outcomes are recorded in trial order.
    """
    for spec in specs:
        source = search.transfer_source()
        search.record(spec, source, run_trial(search.trial_config(spec, source)))


# ---- the search ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchResult:
    """A finished search: its folder, tasks, every trial and the best one (None: all failed)."""

    out: Path
    tasks: tuple[str, ...]
    records: tuple[TrialRecord, ...]
    best: TrialRecord | None


def search(
    base: TrainConfig,
    out: str | Path,
    *,
    trials: int,
    steps_per_trial: int,
    population: int = 4,
    offspring: int = 4,
    parents: int = 2,
    weight_range: Mapping[str, tuple[float, float]] | tuple[float, float] = DEFAULT_WEIGHT_RANGE,
    max_frequency: int = 10,
    mutation: float = 0.1,
    seed: int = 0,
    resume: bool = False,
    engine: Engine = in_process,
    on_trial: Callable[[str, TrialRecord], None] | None = None,
) -> SearchResult:
    """Search task weights and asynchronous frequencies for ``base`` (module docstring).

    Args:
        base: the training config every trial starts from (its ``out``, ``steps``, ``weighting``
            and ``init_from`` are the search's; its weighting section must be left at its defaults).
        out: the search folder (SEARCH).
        trials: trials in all (a resumed search may raise it).
        steps_per_trial: optimizer steps of each trial.
        population: the initial population's size, and the elite's.
        offspring: children per generation.
        parents: parents per child.
        weight_range: (min, max) of the raw weights 10^e, for every task, or a table per task
            (``"*"``: the tasks it leaves out; ``SearchSpace.create``).
        max_frequency: the largest asynchronous frequency.
        mutation: the mutation's standard deviation, as a fraction of each variable's range.
        seed: seeds the search's random draws (the training seed is ``base.seed``).
        resume: continue the search in ``out`` from its ``trials.csv``.
        engine: evaluates a generation's trials (``in_process``: one after another here).
        on_trial: called with each trial's line (``TrialRecord.describe``) and record once it is
            in the csv.

    Raises:
        MtlDataError: bad settings, a new search into a folder that holds one, a resume whose
            settings or base config differ (but for ``trials``), a damaged ``trials.csv``, or an
            exhausted space. A failing trial does not raise: its error is recorded.
    """
    out = Path(out)
    for name, value, low in (
        ("trials", trials, 1),
        ("steps_per_trial", steps_per_trial, 1),
        ("population", population, 1),
        ("offspring", offspring, 1),
        ("parents", parents, 1),
        ("seed", seed, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise MtlDataError(f"search: {name} must be an integer >= {low}, got {value!r}")
    if not (isinstance(mutation, (int, float)) and math.isfinite(mutation) and mutation >= 0):
        raise MtlDataError(f"search: mutation must be a number >= 0, got {mutation!r}")
    validate(base)
    if base.weighting != WeightingConfig():
        raise MtlDataError(
            "search: every trial sets its own weighting (the async strategy with the trial's weights "
            "and frequencies); leave weighting.* at their defaults"
        )
    _check_strategy()
    tasks = _search_tasks(base)
    space = SearchSpace.create(tasks, weight_range, max_frequency)
    settings = Settings(steps_per_trial, population, offspring, parents, max_frequency, float(mutation), seed)
    doc = _search_doc(base, space, settings, trials)
    if resume:
        _check_saved(out, doc, base)
        records = _read_trials(out / TRIALS_FILE, space, headlines(tasks)) if (out / TRIALS_FILE).exists() else []
        write_atomic(out / SEARCH_FILE, json.dumps(doc, indent=1) + "\n")  # the new number of trials
    else:
        if out.exists() and any(out.iterdir()):
            raise MtlDataError(f"{out}: holds a search already; resume it (--resume) or choose another --out")
        write_atomic(out / SEARCH_FILE, json.dumps(doc, indent=1) + "\n")
        records = []
    state = Search(base, out, space, settings, records, on_trial)
    state.write_best()  # a search interrupted between its csv and best.toml
    logger.info(
        "search %s: tasks %s, %d trials of %d steps (%d done), population %d, %d children of %d parents per generation",
        out,
        ", ".join(tasks),
        trials,
        steps_per_trial,
        len(records),
        population,
        offspring,
        parents,
    )

    while len(state.records) < trials:
        generation = settings.generation_of(len(state.records))
        first = settings.first_trial(generation)
        specs = plan_generation(space, settings, state.records[:first], generation)
        for record in state.records[first:]:  # a resumed generation: the trials it already has
            if record.spec != specs[record.trial - first]:
                raise MtlDataError(
                    f"{out / TRIALS_FILE}: trial {record.trial} is not the one this search plans "
                    f"(the file was edited, or written by another version); start a new --out"
                )
        todo = [s for s in specs[len(state.records) - first :] if s.trial < trials]
        for spec in todo:
            stale = state.run_dir(spec.trial)
            if stale.exists():  # the trial an interruption cut short (no csv row): run it again
                logger.warning("%s: an unfinished trial; it is run again", stale)
                shutil.rmtree(stale)
        engine(todo, state)
        if len(state.records) <= todo[-1].trial:
            raise RuntimeError(f"the engine recorded {len(state.records)} trials of {todo[-1].trial + 1}")

    return SearchResult(out, tasks, tuple(state.records), best_of(state.records))


def _check_strategy() -> None:
    from mtl_data.train.weighting import list_weightings

    if STRATEGY not in list_weightings():
        raise MtlDataError(
            f"search: the weighting strategy {STRATEGY!r} (asynchronous backpropagation) is not "
            f"available in this version; strategies: {', '.join(list_weightings())}"
        )


def _search_tasks(base: TrainConfig) -> tuple[str, ...]:
    """The run's tasks (``run.run_tasks``), each labelled by some sample of the evaluation split
    (the fitness needs every task's metric)."""
    from mtl_data.shards.reader import ShardSet
    from mtl_data.train.run import run_tasks

    if not base.shards:
        raise MtlDataError("search: no shards given (--shards)")
    shard_set = ShardSet.open(Path(base.shards))
    tasks = run_tasks(base, shard_set)
    rows = shard_set.manifest
    rows = rows.filter(rows["split"] == base.eval.split)
    unlabelled = [t for t in tasks if rows.height == 0 or not rows[f"has_{t}"].any()]
    if unlabelled:
        raise MtlDataError(
            f"{base.shards}: no sample of the evaluation split {base.eval.split!r} labels "
            f"{', '.join(unlabelled)}, so the fitness cannot measure it; choose --tasks the split "
            "labels or another eval.split"
        )
    return tasks


def _search_doc(base: TrainConfig, space: SearchSpace, settings: Settings, trials: int) -> dict:
    return {
        "format": FORMAT,
        "tasks": list(space.tasks),
        "trials": trials,
        "settings": {**dataclasses.asdict(settings), "exponent_range": space.ranges()},
        "base": to_dict(dataclasses.replace(base, out="")),
    }


def read_search(out: str | Path) -> tuple[TrainConfig, dict]:
    """The base config and settings saved in ``SEARCH/search.json`` (for ``--resume`` without options).

    Returns:
        (base config, ``{"trials", "steps_per_trial", "population", "offspring", "parents",
        "max_frequency", "mutation", "seed", "weight_range": {task: (min, max)}}``).

    Raises:
        MtlDataError: no search there, or an unreadable file.
    """
    path = Path(out) / SEARCH_FILE
    doc = _read_doc(path)
    try:
        s = dict(doc["settings"])
        ranges = s.pop("exponent_range")
        s["weight_range"] = {t: (10.0**lo, 10.0**hi) for t, (lo, hi) in ranges.items()}
        s["trials"] = int(doc["trials"])
        return from_dict(doc["base"], source=str(path)), s
    except (KeyError, TypeError, ValueError) as exc:
        raise MtlDataError(f"{path}: not a search file of this version ({exc})") from None


def _read_doc(path: Path) -> dict:
    doc = read_json_document(path, f"{path.parent}: no search to resume ({SEARCH_FILE} missing)")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise MtlDataError(f"{path}: not a search file of this version (format {FORMAT})")
    return doc


def _check_saved(out: Path, doc: dict, base: TrainConfig) -> None:
    saved = _read_doc(out / SEARCH_FILE)
    now = json.loads(json.dumps(doc))  # tuples as lists, as saved
    changed = [] if saved.get("tasks") == now["tasks"] else [f"tasks: {saved.get('tasks')} -> {now['tasks']}"]
    before = saved.get("settings") if isinstance(saved.get("settings"), dict) else {}
    changed += [
        f"{key}: {before.get(key)!r} -> {value!r}" for key, value in now["settings"].items() if before.get(key) != value
    ]
    try:
        changed += differences(
            from_dict(saved.get("base", {}), source=str(out / SEARCH_FILE)), dataclasses.replace(base, out="")
        )
    except MtlDataError as exc:
        raise MtlDataError(f"{out / SEARCH_FILE}: {exc}") from None
    if changed:
        raise MtlDataError(
            f"{out}: --resume with settings that differ from the search's ({'; '.join(changed)}); "
            "resume with the same options (only --trials may change) or start a new --out"
        )


# ---- trials.csv ---------------------------------------------------------------------------------


def _columns(tasks: Sequence[str], heads: Sequence[Headline]) -> list[str]:
    return (
        ["trial", "generation", "parents"]
        + [f"weight/{t}" for t in tasks]
        + [f"frequency/{t}" for t in tasks]
        + ["fitness"]
        + [h.column for h in heads]
        + ["run", "transfer_from"]
        + [f"exponent/{t}" for t in tasks]
        + ["error"]
    )


def _csv_text(records: Sequence[TrialRecord], heads: Sequence[Headline], tasks: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_columns(tasks, heads), lineterminator="\n")
    writer.writeheader()
    for r in records:
        g = r.spec.genome
        row = {
            "trial": r.trial,
            "generation": r.spec.generation,
            "parents": ";".join(map(str, r.spec.parents)),
            "fitness": repr(r.fitness),
            "run": f"{TRIALS_DIR}/{r.trial:03d}",
            "transfer_from": "" if r.transfer_from is None else r.transfer_from,
            "error": r.error,
        }
        row.update({f"weight/{t}": repr(w) for t, w in zip(tasks, g.weights())})
        row.update({f"frequency/{t}": f for t, f in zip(tasks, g.frequencies)})
        row.update({column: repr(value) for column, value in r.metrics.items()})
        row.update({f"exponent/{t}": repr(e) for t, e in zip(tasks, g.exponents)})
        writer.writerow(row)
    return buffer.getvalue()


def _read_trials(path: Path, space: SearchSpace, heads: Sequence[Headline]) -> list[TrialRecord]:
    """The trials of ``trials.csv``, checked: consecutive from 0, the search's columns, genomes
    on the search's grid."""
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise MtlDataError(f"{path}: cannot read ({exc})") from None
    expected = _columns(space.tasks, heads)
    if columns != expected:
        raise MtlDataError(f"{path}: its columns are not this search's ({', '.join(expected)}); start a new --out")
    records = []
    for line, row in enumerate(rows, start=2):
        try:
            trial = int(row["trial"])
            if trial != len(records):
                raise ValueError(f"trial {trial} where trial {len(records)} was expected")
            exponents = [float(row[f"exponent/{t}"]) for t in space.tasks]
            frequencies = [int(row[f"frequency/{t}"]) for t in space.tasks]
            genome = space.genome(exponents, frequencies)
            if list(genome.exponents) != exponents or list(genome.frequencies) != frequencies:
                raise ValueError("a configuration off the search's grid or bounds")
            parents = tuple(int(p) for p in row["parents"].split(";")) if row["parents"] else ()
            spec = TrialSpec(trial, int(row["generation"]), parents, genome)
            transfer = int(row["transfer_from"]) if row["transfer_from"] else None
            records.append(
                TrialRecord(
                    spec,
                    transfer,
                    {h.column: float(row[h.column]) for h in heads},
                    float(row["fitness"]),
                    row["error"] or "",
                )
            )
        except (TypeError, ValueError) as exc:
            raise MtlDataError(f"{path}:{line}: not a row this search wrote ({exc}); start a new --out") from None
    return records
