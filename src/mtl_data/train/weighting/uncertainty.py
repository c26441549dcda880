"""``uncertainty``: each task weighed by a learned homoscedastic (task) uncertainty.

Kendall, Gal and Cipolla 2018, "Multi-Task Learning Using Uncertainty to Weigh Losses for Scene
Geometry and Semantics" (CVPR 2018), eqs. 7 and 10. Each task has an observation noise sigma_t,
learned with the network; the negative log-likelihood of a Gaussian (regression) or of a
Boltzmann/softmax (classification) likelihood scaled by it gives, per task::

    regression:       L_t / (2 sigma_t^2) + log sigma_t
    classification:   L_t / sigma_t^2     + log sigma_t

A noisy task (large sigma) is down-weighted; the ``log sigma`` term stops sigma from growing
without bound. As the paper advises, the learned parameter is ``s_t = log sigma_t^2`` (stable: no
division by zero, unconstrained), so with ``c_t = 1/2`` (regression) or ``1`` (classification)::

    total = sum_{t present} c_t exp(-s_t) L_t + s_t / 2          w_t = c_t exp(-s_t)  (reported, detached)

For regression with ``L_t`` the mean squared error, the optimum in ``s_t`` is ``exp(s_t) = L_t``:
sigma_t^2 converges to the residual variance, the inverse of the weight (up to c_t).

* ``kinds`` picks each task's form; the default table is ``DEFAULT_KINDS`` below: seg, det2d,
  sign, lane classification (softmax / per-pixel cross-entropy losses); depth, det3d, steer
  regression. det2d and det3d mix a classification and a box-regression term; they are given
  the form of their dominant term. A task in neither ``kinds`` nor the table is an error.
* An absent task contributes nothing, neither ``c_t exp(-s_t) L_t`` nor ``s_t / 2``, so its
  ``s_t`` gets an exactly-zero gradient that step (``where``, not a product: a NaN left in an
  absent loss cannot leak in).
* ``total`` can be negative (``s_t < 0``): only its gradient matters.

Parameters (in ``parameters()`` and ``state_dict``): ``log_variance`` (T,), initialised to
``init_log_variance`` (0: sigma = 1, every weight c_t). They need their own optimizer group (the
trainer's ``weighting`` part) and, under DDP, their gradients averaged over ranks by the trainer
(they live outside the DDP module).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from mtl_data.errors import MtlDataError
from mtl_data.train.weighting.base import Weighting, register_weighting

KINDS = ("regression", "classification")

#: task -> the likelihood form of its loss (Kendall et al. eq. 7 or 10), the ``kinds`` default.
DEFAULT_KINDS: dict[str, str] = {
    "seg": "classification",
    "det2d": "classification",
    "sign": "classification",
    "lane": "classification",
    "depth": "regression",
    "det3d": "regression",
    "steer": "regression",
}

#: the loss coefficient c_t of each form: 1/(2 sigma^2) for regression, 1/sigma^2 for classification.
_FACTOR = {"regression": 0.5, "classification": 1.0}


@dataclass(frozen=True)
class UncertaintyConfig:
    """Hyper-parameters of ``uncertainty``.

    Attributes:
        kinds: task -> ``"regression"`` or ``"classification"``, overriding ``DEFAULT_KINDS``.
        init_log_variance: the initial ``s_t = log sigma_t^2`` of every task (finite).
    """

    kinds: dict[str, str] | None = None
    init_log_variance: float = 0.0

    def __post_init__(self) -> None:
        if self.kinds is not None:
            if not isinstance(self.kinds, Mapping):
                raise ValueError(f"kinds must be a {{task: kind}} table, got {self.kinds!r}")
            bad = [f"{k}={v!r}" for k, v in self.kinds.items() if not isinstance(k, str) or v not in KINDS]
            if bad:
                raise ValueError(f"kinds must be one of {', '.join(KINDS)}; refused: {', '.join(bad)}")
            object.__setattr__(self, "kinds", dict(self.kinds))
        if (
            isinstance(self.init_log_variance, bool)
            or not isinstance(self.init_log_variance, (int, float))
            or not math.isfinite(self.init_log_variance)
        ):
            raise ValueError(f"init_log_variance must be a finite number, got {self.init_log_variance!r}")
        object.__setattr__(self, "init_log_variance", float(self.init_log_variance))


@register_weighting
class Uncertainty(Weighting):
    """Learned log-variances ``s_t``; ``total = sum_present c_t exp(-s_t) L_t + s_t / 2`` (module docstring).

    Raises:
        MtlDataError: ``kinds`` names a task the run does not train, or a task of the run has no
            kind (neither in ``kinds`` nor in ``DEFAULT_KINDS``).
    """

    name = "uncertainty"
    Config = UncertaintyConfig

    def __init__(self, tasks: Sequence[str], config: UncertaintyConfig | None = None):
        super().__init__(tasks, config)
        given = self.config.kinds or {}
        unknown = sorted(set(given) - set(self.tasks))
        if unknown:
            raise MtlDataError(
                f"weighting uncertainty: kinds name task(s) {', '.join(unknown)} that the run does "
                f"not train; its tasks: {', '.join(self.tasks)}"
            )
        kinds = {**DEFAULT_KINDS, **given}
        missing = [t for t in self.tasks if t not in kinds]
        if missing:
            raise MtlDataError(
                f"weighting uncertainty: no likelihood form for task(s) {', '.join(missing)}; set "
                f'kinds={{{missing[0]} = "regression" or "classification"}}'
            )
        self.kinds: dict[str, str] = {t: kinds[t] for t in self.tasks}
        self.log_variance = nn.Parameter(torch.full((self.num_tasks,), self.config.init_log_variance))  # (T,) s_t
        # Derived from the config, so not persistent: it moves with .to() but is not checkpointed.
        self.register_buffer(
            "factor", torch.tensor([_FACTOR[self.kinds[t]] for t in self.tasks]), persistent=False
        )  # (T,) c_t

    def combine(self, losses: torch.Tensor, present: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_inputs(losses, present)
        s = self.log_variance.to(losses.dtype)  # (T,)
        coef = self.factor.to(losses.dtype) * torch.exp(-s)  # (T,) c_t / sigma_t^2
        safe = torch.where(present, losses, torch.zeros_like(losses))  # no NaN from an absent entry
        per_task = torch.where(present, coef * safe + 0.5 * s, torch.zeros_like(losses))  # (T,)
        weights = torch.where(present, coef, torch.zeros_like(coef)).detach()
        return per_task.sum(), weights
