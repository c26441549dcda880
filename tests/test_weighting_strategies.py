"""The dynamic and learned weighting strategies against their papers' formulas, on hand values.

dls, dwa (epoch mechanics), uncertainty (formula, and convergence to the noise variance on a toy
regression), learned, gls, fls, curriculum, async. The contract every strategy keeps (absent
task -> weight 0 and no state update, finite totals, state round trip) is tests/test_weighting.py.
Each expected value is computed here from the formula, independently of the implementation.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mtl_data.errors import MtlDataError
from mtl_data.train.weighting import create_weighting
from mtl_data.train.weighting.curriculum import EXAMPLE_SCHEDULE
from mtl_data.train.weighting.uncertainty import DEFAULT_KINDS

TASKS = ("seg", "depth", "det2d")
ALL = torch.ones(3, dtype=torch.bool)


def mask(*flags: int) -> torch.Tensor:
    return torch.tensor([bool(f) for f in flags])


def state(weighting) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in weighting.state_dict().items()}


def assert_rows_unchanged(before: dict, after: dict, rows: torch.Tensor) -> None:
    """The per-task state (task axis first) of the ``rows`` tasks did not move."""
    for key, value in after.items():
        if value.dim() and value.shape[0] == len(rows):
            assert torch.equal(value[rows], before[key][rows]), key


def scale_weights(means: dict[str, float]) -> dict[str, float]:
    """Leang's loss-scale weights generalised: m_ref / mean_t, m_ref the harmonic mean."""
    m_ref = len(means) / sum(1 / m for m in means.values())
    return {t: m_ref / m for t, m in means.items()}


# ---- dls: dynamic task loss scaling (Leang et al. IV-A.3) ---------------------------------------


def test_dls_weighs_one_in_the_first_epoch_then_rescales_by_the_previous_epochs_mean_losses():
    w = create_weighting("dls", TASKS)
    epoch0 = [([2.0, 10.0, 0.0], [1, 1, 0]), ([4.0, 0.0, 1.0], [1, 0, 1]), ([6.0, 20.0, 3.0], [1, 1, 1])]
    for step, (losses, present) in enumerate(epoch0):
        before = state(w)
        total, weights = w.combine(torch.tensor(losses), mask(*present), step)
        assert torch.equal(weights, mask(*present).float()), step  # 1 during epoch 0, 0 absent
        assert float(total) == sum(v for v, p in zip(losses, present, strict=True) if p)
        assert_rows_unchanged(before, state(w), ~mask(*present))
    w.on_epoch_end(0)
    # means: seg (2+4+6)/3 = 4, depth (10+20)/2 = 15, det2d (1+3)/2 = 2
    expected = scale_weights({"seg": 4.0, "depth": 15.0, "det2d": 2.0})
    want = torch.tensor([expected[t] for t in TASKS])
    torch.testing.assert_close(want, torch.tensor([45 / 49, 12 / 49, 90 / 49]))  # the helper, by hand
    assert torch.equal(w.loss_sum, torch.zeros(3)) and torch.equal(w.loss_count, torch.zeros(3))  # new epoch
    # epoch 1: depth is never present; seg 1, 3 -> 2; det2d 8 -> 8
    epoch1 = [([1.0, 0.0, 8.0], [1, 0, 1]), ([3.0, 0.0, 0.0], [1, 0, 0]), ([0.0, 0.0, 0.0], [0, 0, 0])]
    for step, (losses, present) in enumerate(epoch1, start=3):
        total, weights = w.combine(torch.tensor(losses), mask(*present), step)
        torch.testing.assert_close(weights, want * mask(*present))
        torch.testing.assert_close(total, (want * mask(*present) * torch.tensor(losses)).sum())
    w.on_epoch_end(1)
    again = scale_weights({"seg": 2.0, "det2d": 8.0})
    _, weights = w.combine(torch.tensor([1.0, 1.0, 1.0]), ALL, 6)
    # depth, absent all epoch, keeps its previous weight
    torch.testing.assert_close(weights, torch.tensor([again["seg"], expected["depth"], again["det2d"]]))
    assert again["seg"] == pytest.approx(1.6) and again["det2d"] == pytest.approx(0.4)


def test_dls_with_two_tasks_is_leangs_previous_epoch_loss_ratio():
    # eq. 6: w_seg = Lbar_det / Lbar_seg, w_det = 1 (up to a common factor)
    w = create_weighting("dls", ("seg", "det2d"))
    for step, losses in enumerate([[0.2, 3.0], [0.4, 5.0]]):
        w.combine(torch.tensor(losses), torch.ones(2, dtype=torch.bool), step)
    w.on_epoch_end(0)
    _, weights = w.combine(torch.tensor([1.0, 1.0]), torch.ones(2, dtype=torch.bool), 2)
    assert float(weights[0] / weights[1]) == pytest.approx(4.0 / 0.3)
    assert float(weights.mean()) == pytest.approx(1.0)


def test_dls_a_task_whose_mean_loss_was_zero_keeps_its_weight():
    w = create_weighting("dls", TASKS)
    w.combine(torch.tensor([0.0, 2.0, 4.0]), ALL, 0)
    w.on_epoch_end(0)
    _, weights = w.combine(torch.ones(3), ALL, 1)
    torch.testing.assert_close(weights, torch.tensor([1.0, 4 / 3, 2 / 3]))


# ---- dwa: Dynamic Weight Average (Liu et al. 2019) ----------------------------------------------


def dwa_weights(ratios: dict[str, float], temperature: float) -> dict[str, float]:
    """K exp(r_t / T) / sum_s exp(r_s / T) over the given (present) tasks."""
    e = {t: math.exp(r / temperature) for t, r in ratios.items()}
    return {t: len(e) * v / sum(e.values()) for t, v in e.items()}


def run_epoch(w, epoch: int, steps: list, first_step: int) -> list[torch.Tensor]:
    out = []
    for i, (losses, present) in enumerate(steps):
        before = state(w)
        _, weights = w.combine(torch.tensor(losses), mask(*present), first_step + i)
        assert_rows_unchanged(before, state(w), ~mask(*present))
        out.append(weights)
    w.on_epoch_end(epoch)
    return out


def test_dwa_weighs_one_for_two_epochs_then_softmaxes_the_loss_ratios_over_the_present_tasks():
    w = create_weighting("dwa", TASKS, temperature=2.0)
    # epoch 0 means: 4, 10, 2;  epoch 1 means: 2, 9, 2 (det2d absent at one step)
    e0 = run_epoch(w, 0, [([4.0, 10.0, 2.0], [1, 1, 1]), ([4.0, 10.0, 2.0], [1, 1, 1])], 0)
    e1 = run_epoch(w, 1, [([1.0, 8.0, 2.0], [1, 1, 1]), ([3.0, 10.0, 0.0], [1, 1, 0])], 2)
    for weights in e0 + e1[:1]:
        assert torch.equal(weights, torch.ones(3))
    assert torch.equal(e1[1], torch.tensor([1.0, 1.0, 0.0]))
    r = {"seg": 2 / 4, "depth": 9 / 10, "det2d": 2 / 2}
    _, weights = w.combine(torch.ones(3), ALL, 4)
    want = dwa_weights(r, 2.0)
    torch.testing.assert_close(weights, torch.tensor([want[t] for t in TASKS]))
    assert float(weights.sum()) == pytest.approx(3.0)
    assert weights[2] > weights[1] > weights[0]  # the slowest-falling loss weighs most
    # depth absent: the softmax runs over seg and det2d only, their weights sum to 2
    total, weights = w.combine(torch.tensor([1.0, 0.0, 3.0]), mask(1, 0, 1), 5)
    want = dwa_weights({"seg": r["seg"], "det2d": r["det2d"]}, 2.0)
    torch.testing.assert_close(weights, torch.tensor([want["seg"], 0.0, want["det2d"]]))
    torch.testing.assert_close(total, torch.tensor(want["seg"] * 1.0 + want["det2d"] * 3.0))


def test_dwa_a_task_absent_for_an_epoch_keeps_the_ratio_of_its_last_two_measured_epochs():
    w = create_weighting("dwa", TASKS, temperature=1.0)
    run_epoch(w, 0, [([4.0, 10.0, 2.0], [1, 1, 1])], 0)
    run_epoch(w, 1, [([2.0, 5.0, 0.0], [1, 1, 0])], 1)  # det2d unmeasured: one measured epoch only
    run_epoch(w, 2, [([1.0, 0.0, 1.0], [1, 0, 1])], 2)  # depth unmeasured: keeps 10 -> 5
    # seg: 2 -> 1 (0.5); depth: 10 -> 5 (0.5, carried); det2d: 2 -> 1 (0.5, its two measured epochs)
    assert torch.equal(w.measured, torch.tensor([2.0, 2.0, 2.0]))
    # (combine accumulates, so the weights are read from the next epochs' steps)
    (weights,) = run_epoch(w, 3, [([0.0, 5.0, 2.0], [0, 1, 1])], 3)  # seg unmeasured
    torch.testing.assert_close(weights, torch.tensor([0.0, 1.0, 1.0]))  # equal ratios: equal weights
    # seg keeps 2 -> 1 (0.5); depth 5 -> 5 (1.0); det2d 1 -> 2 (2.0)
    (weights,) = run_epoch(w, 4, [([1.0, 1.0, 1.0], [1, 1, 1])], 4)
    want = dwa_weights({"seg": 0.5, "depth": 1.0, "det2d": 2.0}, 1.0)
    torch.testing.assert_close(weights, torch.tensor([want[t] for t in TASKS]))


def test_dwa_until_a_task_has_two_measured_epochs_its_ratio_is_one():
    w = create_weighting("dwa", TASKS, temperature=0.5)
    run_epoch(w, 0, [([4.0, 0.0, 2.0], [1, 0, 1])], 0)
    run_epoch(w, 1, [([2.0, 7.0, 3.0], [1, 1, 1])], 1)
    _, weights = w.combine(torch.ones(3), ALL, 2)
    want = dwa_weights({"seg": 0.5, "depth": 1.0, "det2d": 1.5}, 0.5)
    torch.testing.assert_close(weights, torch.tensor([want[t] for t in TASKS]))


def test_dwa_a_large_temperature_gives_equal_weights():
    w = create_weighting("dwa", TASKS, temperature=1e6)
    run_epoch(w, 0, [([4.0, 10.0, 2.0], [1, 1, 1])], 0)
    run_epoch(w, 1, [([1.0, 10.0, 3.0], [1, 1, 1])], 1)
    _, weights = w.combine(torch.ones(3), ALL, 2)
    torch.testing.assert_close(weights, torch.ones(3))


@pytest.mark.parametrize("bad", [0, -1.0, math.inf, math.nan, True, "2"])
def test_dwa_refuses_a_temperature_that_is_not_a_positive_number(bad):
    with pytest.raises(MtlDataError, match=r"weighting dwa: temperature must be a finite number > 0, got"):
        create_weighting("dwa", TASKS, temperature=bad)


# ---- uncertainty (Kendall et al. 2018) ----------------------------------------------------------


def test_uncertainty_uses_kendalls_regression_and_classification_forms():
    w = create_weighting("uncertainty", ("seg", "depth", "steer"))  # classification, regression, regression
    s = torch.tensor([0.5, -1.0, 2.0])
    with torch.no_grad():
        w.log_variance.copy_(s)
    losses = torch.tensor([2.0, 3.0, 0.0])
    total, weights = w.combine(losses, mask(1, 1, 0), 0)
    # seg: L / sigma^2 + log sigma;  depth: L / (2 sigma^2) + log sigma;  sigma^2 = exp(s)
    sigma2 = [math.exp(0.5), math.exp(-1.0)]
    expected = 2.0 / sigma2[0] + 0.5 * math.log(sigma2[0]) + 3.0 / (2 * sigma2[1]) + 0.5 * math.log(sigma2[1])
    assert float(total.detach()) == pytest.approx(expected, rel=1e-6)
    torch.testing.assert_close(weights, torch.tensor([1 / sigma2[0], 1 / (2 * sigma2[1]), 0.0]))
    assert not weights.requires_grad
    total.backward()
    # d/ds (c e^-s L + s/2) = -c e^-s L + 1/2; the absent steer gets exactly 0
    torch.testing.assert_close(w.log_variance.grad, torch.tensor([-2.0 / sigma2[0] + 0.5, -1.5 / sigma2[1] + 0.5, 0.0]))
    assert float(w.log_variance.grad[2]) == 0.0


def test_uncertainty_an_absent_nan_loss_reaches_neither_the_total_nor_the_log_variance():
    w = create_weighting("uncertainty", TASKS)
    total, _ = w.combine(torch.tensor([1.0, math.nan, 2.0]), mask(1, 0, 1), 0)
    total.backward()
    assert math.isfinite(float(total.detach()))
    assert bool(torch.all(torch.isfinite(w.log_variance.grad))) and float(w.log_variance.grad[1]) == 0.0


def test_uncertainty_learns_the_noise_variance_of_each_regression_task():
    # two regression tasks with Gaussian noise of variance 0.25 and 4: with L_t the MSE, the
    # optimum of L_t / (2 sigma^2) + log sigma is sigma_t^2 = L_t -> the noise variance
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8192, generator=gen)
    noise_var = (0.25, 4.0)
    y = [
        2.0 * x + 1.0 + math.sqrt(noise_var[0]) * torch.randn(8192, generator=gen),
        -1.0 * x + 3.0 + math.sqrt(noise_var[1]) * torch.randn(8192, generator=gen),
    ]
    w = create_weighting("uncertainty", ("depth", "steer"))
    head = torch.zeros(2, 2, requires_grad=True)  # (task, [slope, bias])
    opt = torch.optim.Adam([head, *w.parameters()], lr=0.05)
    for step in range(1500):
        losses = torch.stack([((head[t, 0] * x + head[t, 1] - y[t]) ** 2).mean() for t in range(2)])
        total, _ = w.combine(losses, torch.ones(2, dtype=torch.bool), step)
        opt.zero_grad()
        total.backward()
        opt.step()
    sigma2 = w.log_variance.detach().exp()
    for t in range(2):
        assert float(sigma2[t]) == pytest.approx(noise_var[t], rel=0.08), (t, sigma2)
    _, weights = w.combine(torch.ones(2), torch.ones(2, dtype=torch.bool), 0)
    assert float(weights[0] / weights[1]) == pytest.approx(noise_var[1] / noise_var[0], rel=0.15)  # 1/sigma^2


def test_uncertainty_kinds_override_the_default_table():
    assert DEFAULT_KINDS["seg"] == "classification" and DEFAULT_KINDS["depth"] == "regression"
    assert set(DEFAULT_KINDS) == {"seg", "depth", "det2d", "det3d", "steer", "sign", "lane"}
    w = create_weighting("uncertainty", TASKS, kinds={"seg": "regression", "depth": "classification"})
    _, weights = w.combine(torch.ones(3), ALL, 0)
    torch.testing.assert_close(weights, torch.tensor([0.5, 1.0, 1.0]))  # s = 0: c_t


@pytest.mark.parametrize(
    ("tasks", "options", "says"),
    [
        (
            TASKS,
            {"kinds": {"seg": "ordinal"}},
            "kinds must be one of regression, classification; refused: seg='ordinal'",
        ),
        (TASKS, {"kinds": ["seg"]}, "kinds must be a {task: kind} table"),
        (TASKS, {"kinds": {"lane": "classification"}}, "kinds name task(s) lane that the run does not train"),
        (("seg", "flow"), {}, "no likelihood form for task(s) flow; set kinds"),
        (TASKS, {"init_log_variance": math.nan}, "init_log_variance must be a finite number"),
    ],
)
def test_uncertainty_refuses_bad_kinds_naming_them(tasks, options, says):
    with pytest.raises(MtlDataError) as info:
        create_weighting("uncertainty", tasks, **options)
    assert str(info.value).startswith("weighting uncertainty: ") and says in str(info.value)


def test_uncertainty_a_task_outside_the_table_is_fine_with_a_kind():
    w = create_weighting("uncertainty", ("seg", "flow"), kinds={"flow": "regression"})
    _, weights = w.combine(torch.ones(2), torch.ones(2, dtype=torch.bool), 0)
    torch.testing.assert_close(weights, torch.tensor([1.0, 0.5]))


# ---- learned (Leang et al. IV-B) ----------------------------------------------------------------


@pytest.mark.parametrize(("scale", "factor"), [("sum", 1.0), ("mean", 2.0)])
def test_learned_two_tasks_is_a_sigmoid_weight(scale, factor):
    w = create_weighting("learned", ("seg", "det2d"), scale=scale)
    with torch.no_grad():
        w.logits.copy_(torch.tensor([0.8, -0.4]))
    alpha = 1 / (1 + math.exp(-(0.8 - -0.4)))  # sigmoid(w), w = z_seg - z_det
    losses = torch.tensor([2.0, 5.0])
    total, weights = w.combine(losses, torch.ones(2, dtype=torch.bool), 0)
    assert float(total.detach()) == pytest.approx(factor * (alpha * 2.0 + (1 - alpha) * 5.0), rel=1e-6)
    torch.testing.assert_close(weights, factor * torch.tensor([alpha, 1 - alpha]))
    total.backward()
    # d/dz_seg [K (alpha L1 + (1 - alpha) L2)] = K alpha (1 - alpha) (L1 - L2) = -d/dz_det
    g = factor * alpha * (1 - alpha) * (2.0 - 5.0)
    torch.testing.assert_close(w.logits.grad, torch.tensor([g, -g]))
    assert g < 0  # descent raises the weight of the smaller loss: no regulariser, as in the paper


def test_learned_softmax_runs_over_the_present_tasks_and_an_absent_logit_gets_no_gradient():
    w = create_weighting("learned", TASKS)
    z = [0.3, 1.5, -0.2]
    with torch.no_grad():
        w.logits.copy_(torch.tensor(z))
    losses = torch.tensor([1.0, 0.0, 4.0])
    total, weights = w.combine(losses, mask(1, 0, 1), 0)
    e = [math.exp(z[0]), math.exp(z[2])]
    p = [e[0] / sum(e), e[1] / sum(e)]
    torch.testing.assert_close(weights, torch.tensor([2 * p[0], 0.0, 2 * p[1]]))
    assert float(total.detach()) == pytest.approx(2 * (p[0] * 1.0 + p[1] * 4.0), rel=1e-6)
    total.backward()
    assert float(w.logits.grad[1]) == 0.0
    mean = p[0] * 1.0 + p[1] * 4.0
    torch.testing.assert_close(w.logits.grad, torch.tensor([2 * p[0] * (1.0 - mean), 0.0, 2 * p[1] * (4.0 - mean)]))


def test_learned_starts_equal_and_sgd_moves_the_weight_onto_the_smaller_loss():
    w = create_weighting("learned", TASKS)
    _, weights = w.combine(torch.ones(3), ALL, 0)
    assert torch.equal(weights, torch.ones(3))
    opt = torch.optim.SGD(w.parameters(), lr=0.1)
    for step in range(20):
        total, _ = w.combine(torch.tensor([1.0, 2.0, 4.0]), ALL, step)
        opt.zero_grad()
        total.backward()
        opt.step()
    _, weights = w.combine(torch.ones(3), ALL, 20)
    assert weights[0] > 1 > weights[2] and float(weights.sum()) == pytest.approx(3.0)


def test_learned_refuses_an_unknown_scale():
    with pytest.raises(MtlDataError, match="weighting learned: scale must be one of mean, sum, got 'max'"):
        create_weighting("learned", TASKS, scale="max")


# ---- gls and fls (Chennupati et al., MultiNet++) ------------------------------------------------


def grads(total: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
    (g,) = torch.autograd.grad(total, losses)
    return g


def test_gls_is_the_geometric_mean_of_the_present_losses_with_autograd_gradients():
    values = [2.0, 8.0, 0.5]
    losses = torch.tensor(values, requires_grad=True)
    total, weights = create_weighting("gls", TASKS).combine(losses, ALL, 0)
    assert float(total.detach()) == pytest.approx(2.0, rel=1e-6)  # (2 * 8 * 0.5)^(1/3)
    reference = torch.tensor(values, requires_grad=True)
    ref_total = reference.prod() ** (1 / 3)
    torch.testing.assert_close(grads(total, losses), grads(ref_total, reference))
    torch.testing.assert_close(weights, torch.tensor([2.0 / (3 * v) for v in values]))  # L / (n L_t)


def test_gls_with_a_task_absent_is_the_geometric_mean_of_the_others_not_zero():
    losses = torch.tensor([2.0, 0.0, 8.0], requires_grad=True)  # depth absent, its loss 0
    total, weights = create_weighting("gls", TASKS).combine(losses, mask(1, 0, 1), 0)
    assert float(total.detach()) == pytest.approx(4.0, rel=1e-6)  # sqrt(2 * 8)
    reference = torch.tensor([2.0, 8.0], requires_grad=True)
    ref_grad = grads(reference.prod().sqrt(), reference)
    g = grads(total, losses)
    torch.testing.assert_close(g, torch.tensor([float(ref_grad[0]), 0.0, float(ref_grad[1])]))
    torch.testing.assert_close(weights, g)
    assert float(weights[1]) == 0.0


def test_gls_with_no_task_present_is_zero_and_a_zero_loss_stays_finite():
    total, weights = create_weighting("gls", TASKS).combine(torch.tensor([1.0, 2.0, 3.0]), mask(0, 0, 0), 0)
    assert float(total) == 0.0 and torch.equal(weights, torch.zeros(3))
    losses = torch.tensor([0.0, 2.0, 3.0], requires_grad=True)
    total, weights = create_weighting("gls", TASKS).combine(losses, ALL, 0)
    total.backward()
    assert math.isfinite(float(total.detach())) and float(total.detach()) < 1e-3  # (1e-12 * 6)^(1/3)
    assert bool(torch.all(torch.isfinite(losses.grad))) and bool(torch.all(torch.isfinite(weights)))
    assert float(weights[0]) == 0.0  # clamped below EPS: no gradient, as the clamp's autograd


def test_gls_gradient_weights_come_from_the_global_losses_under_ddp(monkeypatch):
    # a rank holding no sample of a globally present task has L_t = 0 there; its weights must be
    # the global batch's, so that DDP's average of the ranks' gradients is the global GLS gradient
    from mtl_data.train.weighting import gls

    global_losses = torch.tensor([2.0, 8.0, 0.5])
    monkeypatch.setattr(gls, "mean_over_ranks", lambda values: global_losses.clone())
    local = torch.tensor([4.0, 0.0, 1.0], requires_grad=True)  # this rank's share x world size
    total, weights = create_weighting("gls", TASKS).combine(local, ALL, 0)
    reference = global_losses.clone().requires_grad_(True)
    torch.testing.assert_close(grads(total, local), grads(reference.prod() ** (1 / 3), reference))
    assert float(total.detach()) == pytest.approx(2.0, rel=1e-6)  # the global value
    assert float(weights[1]) > 0


def _ddp_rank(rank: int, world: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        # each rank's losses are its share of the global batch times world_size; rank 0 holds no
        # depth sample (its depth loss is 0) though depth is present globally
        share = (torch.tensor([0.25, 0.0, 0.5]), torch.tensor([0.75, 1.0, 0.5]))[rank] * world
        global_losses = torch.tensor([2.0, 8.0, 0.5])
        theta = torch.ones(3, requires_grad=True)
        total, _ = create_weighting("gls", TASKS).combine(theta * share * global_losses, ALL, 0)
        total.backward()
        grad = theta.grad.clone()
        dist.all_reduce(grad)  # what DDP does to the model's gradients: the mean over ranks
        dls = create_weighting("dls", TASKS)
        dls.combine(share * global_losses, ALL, 0)
        dls.on_epoch_end(0)
        torch.save({"total": total.detach(), "grad": grad / world, "dls": dls.weight.clone()}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_gls_and_dls_under_ddp_follow_the_global_batch_on_every_rank(tmp_path):
    mp.spawn(_ddp_rank, args=(2, f"file://{tmp_path / 'store'}", str(tmp_path / "rank")), nprocs=2)
    global_losses = torch.tensor([2.0, 8.0, 0.5])
    theta = torch.ones(3, requires_grad=True)
    (want,) = torch.autograd.grad((theta * global_losses).prod() ** (1 / 3), theta)
    single = create_weighting("dls", TASKS)
    single.combine(global_losses, ALL, 0)
    single.on_epoch_end(0)
    for rank in range(2):
        result = torch.load(tmp_path / f"rank.{rank}")
        assert float(result["total"]) == pytest.approx(2.0, rel=1e-6), rank  # the global geometric mean
        torch.testing.assert_close(result["grad"], want)  # not the mean of the ranks' own GLS gradients
        torch.testing.assert_close(result["dls"], single.weight)


def test_fls_multiplies_gls_by_the_geometric_mean_of_the_focused_tasks():
    values = [2.0, 8.0, 0.5]
    losses = torch.tensor(values, requires_grad=True)
    total, weights = create_weighting("fls", TASKS, focus=["seg", "det2d"]).combine(losses, ALL, 0)
    reference = torch.tensor(values, requires_grad=True)
    ref_total = reference.prod() ** (1 / 3) * (reference[0] * reference[2]) ** (1 / 2)  # eq. 3
    assert float(total.detach()) == pytest.approx(2.0 * 1.0, rel=1e-6)
    torch.testing.assert_close(grads(total, losses), grads(ref_total, reference))
    torch.testing.assert_close(
        weights, torch.tensor([2.0 * (1 / 3 + 1 / 2) / 2.0, 2.0 / (3 * 8.0), 2.0 * (1 / 3 + 1 / 2) / 0.5])
    )


def test_fls_focus_over_the_present_focused_tasks_only_and_plain_gls_when_none_is_present():
    fls = create_weighting("fls", TASKS, focus=("seg", "depth"))
    total, _ = fls.combine(torch.tensor([2.0, 0.0, 8.0]), mask(1, 0, 1), 0)
    assert float(total) == pytest.approx(4.0 * 2.0, rel=1e-6)  # sqrt(2 * 8) * 2
    total, weights = fls.combine(torch.tensor([0.0, 0.0, 8.0]), mask(0, 0, 1), 1)
    assert float(total) == pytest.approx(8.0, rel=1e-6)  # plain GLS of det2d alone, not 0
    torch.testing.assert_close(weights, torch.tensor([0.0, 0.0, 1.0]))
    plain_total, plain_weights = create_weighting("gls", TASKS).combine(torch.tensor([1.0, 3.0, 9.0]), ALL, 0)
    no_focus_total, no_focus_weights = create_weighting("fls", TASKS).combine(torch.tensor([1.0, 3.0, 9.0]), ALL, 0)
    assert torch.equal(plain_total, no_focus_total) and torch.equal(plain_weights, no_focus_weights)


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"focus": ("lane",)}, "focus names task(s) lane that the run does not train; its tasks: seg, depth, det2d"),
        ({"focus": "seg"}, "focus must be a list of task names, got 'seg'"),
        ({"focus": ["seg", "seg"]}, "focus names task(s) seg twice"),
        ({"focus": [3]}, "focus must be a list of task names; refused: 3"),
    ],
)
def test_fls_refuses_a_bad_focus_naming_it(options, says):
    with pytest.raises(MtlDataError) as info:
        create_weighting("fls", TASKS, **options)
    assert str(info.value).startswith("weighting fls: ") and says in str(info.value)


# ---- curriculum ---------------------------------------------------------------------------------

REPORT_TASKS = ("sign", "det2d", "lane")


@pytest.mark.parametrize(
    ("epochs_done", "want"),
    [
        (0, [1.0, 1.0, 1.0]),
        (9, [1.0, 1.0, 1.0]),  # report epochs 1-10: equal
        (10, [1.0, 3.0, 15.0]),
        (29, [1.0, 3.0, 15.0]),  # epochs 11-30
        (30, [1.0, 5.0, 30.0]),
        (49, [1.0, 5.0, 30.0]),  # epochs 31-50
        (80, [1.0, 5.0, 30.0]),  # past the plan: the last phase stays
    ],
)
def test_curriculum_follows_the_reports_proposed_schedule_by_epoch(epochs_done, want):
    w = create_weighting("curriculum", REPORT_TASKS, schedule=list(EXAMPLE_SCHEDULE), unit="epoch")
    for epoch in range(epochs_done):
        w.on_epoch_end(epoch)
    assert int(w.epochs_done) == epochs_done
    total, weights = w.combine(torch.tensor([1.0, 2.0, 3.0]), torch.ones(3, dtype=torch.bool), 1000)
    assert torch.equal(weights, torch.tensor(want))
    assert float(total) == pytest.approx(want[0] + 2 * want[1] + 3 * want[2])
    _, weights = w.combine(torch.ones(3), mask(1, 1, 0), 1000)  # lane absent
    assert torch.equal(weights, torch.tensor(want[:2] + [0.0]))


def test_curriculum_by_step_switches_at_the_until_boundaries_and_resumes_in_its_phase():
    schedule = [{"until": 3, "weights": {"seg": 0.5}}, {"until": 5, "weights": {"seg": 2.0, "det2d": 0.0}}]
    w = create_weighting("curriculum", TASKS, schedule=schedule)
    seen = [w.combine(torch.ones(3), ALL, step)[1].tolist() for step in range(7)]
    assert seen == [[0.5, 1.0, 1.0]] * 3 + [[2.0, 1.0, 0.0]] * 4
    by_epoch = create_weighting("curriculum", TASKS, schedule=schedule, unit="epoch")
    for epoch in range(3):
        by_epoch.on_epoch_end(epoch)
    resumed = create_weighting("curriculum", TASKS, schedule=schedule, unit="epoch")
    resumed.load_state_dict(state(by_epoch))
    assert resumed.combine(torch.ones(3), ALL, 0)[1].tolist() == [2.0, 1.0, 0.0]


def test_curriculum_without_a_schedule_weighs_every_present_task_one():
    _, weights = create_weighting("curriculum", TASKS).combine(torch.ones(3), mask(1, 0, 1), 7)
    assert torch.equal(weights, torch.tensor([1.0, 0.0, 1.0]))


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"unit": "iteration"}, "unit must be one of step, epoch, got 'iteration'"),
        ({"schedule": {"until": 3}}, "schedule must be a list of {until, weights} phases"),
        ({"schedule": [{"until": 0, "weights": {}}]}, "schedule[0].until must be an integer > 0"),
        ({"schedule": [{"until": 5}, {"until": 5}]}, "schedule[1].until must be an integer > 5"),
        ({"schedule": [{"until": 2.5}]}, "schedule[0].until must be an integer > 0 (> 0 and increasing), got 2.5"),
        ({"schedule": [{"until": 2, "weight": {}}]}, "schedule[0] has unknown key(s) weight"),
        ({"schedule": [{"until": 2, "weights": {"seg": -1}}]}, "weights must be finite numbers >= 0; refused: seg=-1"),
        ({"schedule": [{"until": 2, "weights": {"lane": 3}}]}, "schedule[0].weights name task(s) lane that the run"),
        (
            {"schedule": [{"until": 2, "weights": {"seg": 0, "depth": 0, "det2d": 0}}]},
            "schedule[0] weighs every task 0",
        ),
    ],
)
def test_curriculum_refuses_a_bad_schedule_naming_the_phase(options, says):
    with pytest.raises(MtlDataError) as info:
        create_weighting("curriculum", TASKS, **options)
    assert str(info.value).startswith("weighting curriculum: ") and says in str(info.value)


# ---- async: asynchronous backpropagation (Leang et al. IV-D) ------------------------------------


@pytest.mark.parametrize("n_steps", [1, 7, 20, 21])
def test_async_applies_each_task_every_nu_steps_from_step_zero(n_steps):
    frequencies = {"seg": 1, "depth": 3, "det2d": 7}
    w = create_weighting("async", TASKS, frequencies=frequencies, weights={"det2d": 0.5})
    applied = torch.zeros(3)
    for step in range(n_steps):
        losses = torch.tensor([1.0, 2.0, 4.0])
        total, weights = w.combine(losses, ALL, step)
        on = [step % nu == 0 for nu in frequencies.values()]
        assert weights.tolist() == [1.0 if on[0] else 0.0, 1.0 if on[1] else 0.0, 0.5 if on[2] else 0.0], step
        assert float(total) == pytest.approx(float((weights * losses).sum()))  # not scaled by nu (eq. 12)
        applied += weights > 0
    assert applied.tolist() == [float((n_steps - 1) // nu + 1) for nu in frequencies.values()]


def test_async_a_task_absent_on_its_turn_weighs_zero_and_a_nan_in_a_skipped_task_does_not_leak():
    w = create_weighting("async", TASKS, frequencies={"depth": 2})
    _, weights = w.combine(torch.ones(3), mask(1, 0, 1), 0)
    assert torch.equal(weights, torch.tensor([1.0, 0.0, 1.0]))
    losses = torch.tensor([1.0, math.nan, 2.0], requires_grad=True)
    total, weights = w.combine(losses, ALL, 1)  # depth's off step
    total.backward()
    assert float(total.detach()) == 3.0 and torch.equal(losses.grad, torch.tensor([1.0, 0.0, 1.0]))
    assert torch.equal(weights, torch.tensor([1.0, 0.0, 1.0]))


def test_async_leangs_kitti_configuration():
    # Table I, KITTI: f_seg = 7, f_det = 1, normalised weights 0.9776 / 0.0224
    w = create_weighting("async", ("seg", "det2d"), frequencies={"seg": 7}, weights={"seg": 0.9776, "det2d": 0.0224})
    two = torch.ones(2, dtype=torch.bool)
    torch.testing.assert_close(w.combine(torch.ones(2), two, 14)[1], torch.tensor([0.9776, 0.0224]))
    torch.testing.assert_close(w.combine(torch.ones(2), two, 15)[1], torch.tensor([0.0, 0.0224]))


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (
            {"frequencies": {"seg": 0}},
            "frequencies must be integers >= 1 (apply the task every nu steps); refused: seg=0",
        ),
        ({"frequencies": {"seg": 2.5}}, "refused: seg=2.5"),
        ({"frequencies": {"seg": True}}, "refused: seg=True"),
        ({"frequencies": [2]}, "frequencies must be a {task: steps} table"),
        ({"weights": {"seg": -0.5}}, "weights must be finite numbers >= 0; refused: seg=-0.5"),
        ({"frequencies": {"lane": 2}}, "frequencies name task(s) lane that the run does not train"),
        ({"weights": {"sign": 2.0}}, "weights name task(s) sign that the run does not train"),
        ({"weights": {"seg": 0, "depth": 0, "det2d": 0.0}}, "every weight is 0"),
    ],
)
def test_async_refuses_bad_options_naming_them(options, says):
    with pytest.raises(MtlDataError) as info:
        create_weighting("async", TASKS, **options)
    assert str(info.value).startswith("weighting async: ") and says in str(info.value)


def test_strategies_with_no_learned_weights_have_no_parameters():
    for name in ("dls", "dwa", "gls", "fls", "curriculum", "async"):
        assert list(create_weighting(name, TASKS).parameters()) == [], name
    assert [p.shape for p in create_weighting("uncertainty", TASKS).parameters()] == [torch.Size([3])]
    assert [p.shape for p in create_weighting("learned", TASKS).parameters()] == [torch.Size([3])]
