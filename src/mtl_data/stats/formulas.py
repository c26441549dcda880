"""The numbers behind the recommendations: pure functions of counts, each citing its source.

Task weights are returned normalized to a mean of 1 over the tasks that have labels, so a
weighted sum of task losses keeps the scale of the plain sum; a task without labels gets no
weight (it is left out, not given 0, because it has no loss to weigh).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass


def effective_number(n: float, beta: float) -> float:
    """Effective number of samples ``(1 - beta^n) / (1 - beta)``.

    Cui et al., "Class-Balanced Loss Based on Effective Number of Samples", CVPR 2019: each
    new sample adds less new information the more there are; ``beta`` in [0, 1) sets how fast
    (beta -> 0: every class counts as 1; beta -> 1: the plain count). Grows to ``1 / (1 - beta)``.
    """
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    if n <= 0:
        return 0.0
    return -math.expm1(n * math.log(beta)) / (1.0 - beta) if beta > 0 else 1.0


def imbalance_ratio(counts: Mapping[str, float]) -> float | None:
    """Largest over smallest non-zero count; None with fewer than one non-zero class.

    Absent classes (count 0) are reported separately: they would make the ratio infinite and
    hide how skewed the classes that do occur are.
    """
    present = [c for c in counts.values() if c > 0]
    return max(present) / min(present) if present else None


@dataclass(frozen=True)
class WeightRule:
    """A rule turning labelled-sample counts per task into loss weights."""

    name: str
    explain: str  # one line for the terminal
    raw: Callable[[float, float], float]  # (labelled count n > 0, beta) -> unnormalized weight


#: task-weight rules by name (the keys of ``recommendations.task_weights`` in the JSON).
WEIGHT_RULES: dict[str, WeightRule] = {
    rule.name: rule
    for rule in (
        WeightRule(
            "inverse_frequency",
            "w ~ 1/n: every task contributes equally in expectation, however rarely it is labelled",
            lambda n, beta: 1.0 / n,
        ),
        WeightRule(
            "sqrt_inverse_frequency",
            "w ~ 1/sqrt(n): halfway between equal weights and 1/n, damps noisy rare tasks",
            lambda n, beta: 1.0 / math.sqrt(n),
        ),
        WeightRule(
            "effective_number",
            "w ~ (1-beta)/(1-beta^n) (Cui et al. 2019): like 1/n, saturating for large n",
            lambda n, beta: 1.0 / effective_number(n, beta),
        ),
    )
}


def task_weights(labelled: Mapping[str, int], rule: str, beta: float = 0.9999) -> dict[str, float]:
    """Loss weight per task by ``rule``, normalized to mean 1 over tasks with ``labelled > 0``.

    Args:
        labelled: task -> number of training samples that label it.
        rule: a key of ``WEIGHT_RULES``.
        beta: the effective-number parameter (used by ``effective_number`` only).

    Returns:
        task -> weight, for the tasks with labels only, in the order of ``labelled``.
    """
    fn = WEIGHT_RULES[rule].raw
    raw = {task: fn(float(n), beta) for task, n in labelled.items() if n > 0}
    if not raw:
        return {}
    mean = sum(raw.values()) / len(raw)
    return {task: w / mean for task, w in raw.items()}


def temperature_mix(samples: Mapping[str, int], alpha: float) -> dict[str, float]:
    """Sampling probability per source, ``p_s = n_s^alpha / sum_k n_k^alpha``.

    Temperature sampling as used for multilingual and multi-task mixtures (Arivazhagan et al.
    2019; Raffel et al. 2020): alpha = 1 samples in proportion to size (the largest source
    swamps the rest), alpha = 0 uniformly over sources, values between trade one for the other.
    Sources with no samples get probability 0.
    """
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    raw = {source: (float(n) ** alpha if n > 0 else 0.0) for source, n in samples.items()}
    total = sum(raw.values())
    return {source: (v / total if total else 0.0) for source, v in raw.items()}
