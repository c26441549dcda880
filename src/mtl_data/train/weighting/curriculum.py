"""``curriculum``: piecewise-constant task weights that follow a schedule of steps or epochs.

Curriculum learning (Bengio et al. 2009) applied to the task weights, as proposed by the
GTSRB + KITTI + TuSimple student report "Multi-Task Learning for Autonomous Driving: Object
Detection, Lane Detection, and Traffic Sign Classification" (Sanjay, Manivannan, Bollinedi and
Varra, section 7 "Curriculum Learning"; ``../shared/papers/mtl-driving-det-lane-sign-report.txt``):
equal weights first, so the shared backbone learns general features, then progressively larger weights for the
under-trained tasks::

    epochs 1-10  equal weights
    epochs 11-30 w_det = 3,  w_lane = 15
    epochs 31-50 w_det = 5,  w_lane = 30

``schedule`` is a list of phases ``{"until": u, "weights": {task: w}}`` with strictly increasing
``u``; ``unit`` says whether ``u`` counts optimizer steps or epochs. With ``c`` the number of
steps done (``step``, 0-based) or of epochs completed (0 during the first epoch), the phase in
force is the first one with ``c < until``; past the last ``until`` the last phase stays in force
(training longer than planned keeps the final weights). A task a phase does not name weighs 1;
an absent task weighs 0. The report's proposal, with this project's task names, is
``EXAMPLE_SCHEDULE``: ``until`` is exclusive and 0-based, so ``until = 10`` covers the report's
1-based epochs 1-10::

    unit = "epoch"
    schedule = [{until = 10, weights = {}},
                {until = 30, weights = {det2d = 3, lane = 15}},
                {until = 50, weights = {det2d = 5, lane = 30}}]

Empty schedule (the default): every present task weighs 1, the same as ``equal``.

State: with ``unit = "epoch"``, ``epochs_done`` (), the number of epochs completed, set by
``on_epoch_end(epoch)`` to ``epoch + 1`` (in ``state_dict``, so a resumed run continues in the
right phase). The phase table is derived from the config (a non-persistent buffer).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from mtl_data.errors import MtlDataError
from mtl_data.train.weighting.base import Weighting, finite_nonnegative, register_weighting, weighted_sum

UNITS = ("step", "epoch")

#: Sanjay et al.'s proposed curriculum (det -> det2d), for ``unit = "epoch"`` (module docstring).
EXAMPLE_SCHEDULE: tuple[dict, ...] = (
    {"until": 10, "weights": {}},
    {"until": 30, "weights": {"det2d": 3.0, "lane": 15.0}},
    {"until": 50, "weights": {"det2d": 5.0, "lane": 30.0}},
)


@dataclass(frozen=True)
class CurriculumConfig:
    """Hyper-parameters of ``curriculum``.

    Attributes:
        schedule: the phases, ``{"until": int > 0, "weights": {task: weight >= 0}}``, ``until``
            strictly increasing; empty: weight 1 throughout.
        unit: ``"step"`` (``until`` counts optimizer steps) or ``"epoch"`` (epochs completed).
    """

    schedule: tuple[dict, ...] = ()
    unit: str = "step"

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"unit must be one of {', '.join(UNITS)}, got {self.unit!r}")
        if isinstance(self.schedule, (str, Mapping)) or not isinstance(self.schedule, (list, tuple)):
            raise ValueError(f"schedule must be a list of {{until, weights}} phases, got {self.schedule!r}")
        phases, previous = [], 0
        for i, phase in enumerate(self.schedule):
            where = f"schedule[{i}]"
            if not isinstance(phase, Mapping):
                raise ValueError(f"{where} must be a {{until, weights}} table, got {phase!r}")
            extra = sorted(set(phase) - {"until", "weights"})
            if extra:
                raise ValueError(
                    f"{where} has unknown key(s) {', '.join(map(str, extra))}; a phase has until and weights"
                )
            until, weights = phase.get("until"), phase.get("weights", {})
            if isinstance(until, bool) or not isinstance(until, int) or until <= previous:
                raise ValueError(f"{where}.until must be an integer > {previous} (> 0 and increasing), got {until!r}")
            if not isinstance(weights, Mapping):
                raise ValueError(f"{where}.weights must be a {{task: weight}} table, got {weights!r}")
            bad = [f"{k}={v!r}" for k, v in weights.items() if not isinstance(k, str) or not finite_nonnegative(v)]
            if bad:
                raise ValueError(f"{where}.weights must be finite numbers >= 0; refused: {', '.join(bad)}")
            phases.append({"until": until, "weights": {k: float(v) for k, v in weights.items()}})
            previous = until
        object.__setattr__(self, "schedule", tuple(phases))


@register_weighting
class Curriculum(Weighting):
    """Piecewise-constant weights from ``schedule`` (module docstring).

    Raises:
        MtlDataError: a phase names a task the run does not train, or weighs every task of the
            run 0.
    """

    name = "curriculum"
    Config = CurriculumConfig

    def __init__(self, tasks: Sequence[str], config: CurriculumConfig | None = None):
        super().__init__(tasks, config)
        phases = self.config.schedule or ({"until": 1, "weights": {}},)
        for i, phase in enumerate(self.config.schedule):
            unknown = sorted(set(phase["weights"]) - set(self.tasks))
            if unknown:
                raise MtlDataError(
                    f"weighting curriculum: schedule[{i}].weights name task(s) {', '.join(unknown)} "
                    f"that the run does not train; its tasks: {', '.join(self.tasks)}"
                )
            if not any(phase["weights"].get(t, 1.0) for t in self.tasks):
                raise MtlDataError(
                    f"weighting curriculum: schedule[{i}] weighs every task 0, so no task would be trained in it"
                )
        table = [[phase["weights"].get(t, 1.0) for phase in phases] for t in self.tasks]
        # Derived from the config: they move with .to() but are not checkpointed.
        self.register_buffer("table", torch.tensor(table, dtype=torch.float32), persistent=False)  # (T, P)
        self.register_buffer("until", torch.tensor([p["until"] for p in phases]), persistent=False)  # (P,)
        if self.config.unit == "epoch":
            self.register_buffer("epochs_done", torch.zeros((), dtype=torch.long))  # ()

    def phase(self, step: int) -> torch.Tensor:
        """() long: the index of the phase in force at ``step`` (no host read)."""
        count = self.epochs_done if self.config.unit == "epoch" else step
        # the number of phases already over, capped at the last one
        return (self.until <= count).sum().clamp_max(self.until.numel() - 1)

    def combine(self, losses: torch.Tensor, present: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_inputs(losses, present)
        scheduled = self.table.index_select(1, self.phase(step).reshape(1)).squeeze(1).to(losses.dtype)  # (T,)
        weights = torch.where(present, scheduled, torch.zeros_like(scheduled))
        return weighted_sum(losses, weights, present), weights

    @torch.no_grad()
    def on_epoch_end(self, epoch: int) -> None:
        """Epoch ``epoch`` (0-based) is over: ``epoch + 1`` epochs are done."""
        if self.config.unit == "epoch":
            self.epochs_done.fill_(epoch + 1)
