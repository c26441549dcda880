"""``fls``: the focused loss strategy, the geometric mean of all tasks times that of the focused ones.

Chennupati, Sistu, Yogamani and Rawashdeh 2019, "MultiNet++: Multi-Stream Feature Aggregation
and Geometric Loss Strategy for Multi-Task Learning" (CVPR Workshops 2019), eq. 3: to give m of
the n tasks more attention, the geometric loss (``gls``) is multiplied by the geometric mean of
the focused tasks' losses::

    L = (prod_{t present} L_t)^(1/n) * (prod_{f in F, f present} L_f)^(1/m)

with n the present tasks and m the present focused tasks (``focus`` names F). In log space the
focused tasks get exponent ``1/n + 1/m`` instead of ``1/n``, so their gradient weight is
``w_t = L (1/n + 1/m) / L_t`` against ``L / (n L_t)`` for the others.

Partial labels: the focus factor runs over the present focused tasks only; when none is
present it is 1 (the total is plain GLS that step), never 0. No task present: 0. The
numerics (the EPS floor in the log) and the DDP construction (weights from the global losses)
are ``gls``'s: see ``gls.power_product``.

``focus`` is empty by default, which makes ``fls`` the same as ``gls``; name the tasks to
favour, e.g. ``focus = ["seg"]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mtl_data.errors import MtlDataError
from mtl_data.train.weighting.base import Weighting, register_weighting
from mtl_data.train.weighting.gls import power_product


@dataclass(frozen=True)
class FLSConfig:
    """Hyper-parameters of ``fls``.

    Attributes:
        focus: the focused tasks F (names, each once); empty: plain GLS.
    """

    focus: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.focus, str) or not isinstance(self.focus, (list, tuple)):
            raise ValueError(f"focus must be a list of task names, got {self.focus!r}")
        bad = [repr(t) for t in self.focus if not isinstance(t, str) or not t]
        if bad:
            raise ValueError(f"focus must be a list of task names; refused: {', '.join(bad)}")
        twice = sorted({t for t in self.focus if self.focus.count(t) > 1})
        if twice:
            raise ValueError(f"focus names task(s) {', '.join(twice)} twice")
        object.__setattr__(self, "focus", tuple(self.focus))


@register_weighting
class Focused(Weighting):
    """``L = GLS(present) * GLS(present focused)`` (module docstring).

    Raises:
        MtlDataError: ``focus`` names a task the run does not train.
    """

    name = "fls"
    Config = FLSConfig

    def __init__(self, tasks: Sequence[str], config: FLSConfig | None = None):
        super().__init__(tasks, config)
        unknown = [t for t in self.config.focus if t not in self.tasks]
        if unknown:
            raise MtlDataError(
                f"weighting fls: focus names task(s) {', '.join(unknown)} that the run does not "
                f"train; its tasks: {', '.join(self.tasks)}"
            )
        self.register_buffer(
            "focused", torch.tensor([t in self.config.focus for t in self.tasks]), persistent=False
        )  # (T,) bool, from the config

    def combine(self, losses: torch.Tensor, present: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_inputs(losses, present)
        focused = present & self.focused  # (T,)
        n = present.sum().clamp_min(1).to(losses.dtype)
        m = focused.sum().clamp_min(1).to(losses.dtype)  # none focused present: the factor is the empty product, 1
        exponents = present.to(losses.dtype) / n + focused.to(losses.dtype) / m  # (T,) a_t
        return power_product(losses, present, exponents)
