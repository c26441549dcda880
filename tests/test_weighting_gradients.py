"""Gradient-based weighting: GradNorm and the gradient-conflict methods (PCGrad, MGDA, CAGrad).

Each method's update is checked on hand-made task gradients against an independent computation
written here from the paper's formula; GradNorm on a toy problem (one loss 100x the other); and
every one of them under a real 2-process DDP (gloo, ``static_graph=True``) against one process
on the concatenated batch. The contract suite (``test_weighting.py``) covers them too.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from mtl_data.errors import MtlDataError
from mtl_data.train.weighting import create_weighting
from mtl_data.train.weighting.conflict import cagrad_dual, project_to_simplex
from mtl_data.train.weighting.gradnorm import last_shared_layer

CONFLICT = ("pcgrad", "mgda", "cagrad")


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


# ---- a model whose task gradients on the shared parameter are given vectors ------------------------


class Bias(nn.Module):
    def __init__(self, value: float):
        super().__init__()
        self.b = nn.Parameter(torch.tensor(value, dtype=torch.float64))


class GivenGradients(nn.Module):
    """Shared ``encoder.theta`` (n,), one scalar head per task; ``L_t = g_t . theta + b_t^2 / 2``, so
    ``grad_theta L_t = g_t`` and ``grad_{b_t} L_t = b_t`` (head t's own value, t + 1)."""

    def __init__(self, gradients: torch.Tensor):
        super().__init__()
        self.gradients = gradients.to(torch.float64)  # (T, n)
        self.encoder = nn.Module()
        self.encoder.theta = nn.Parameter(torch.zeros(gradients.shape[1], dtype=torch.float64))
        self.heads = nn.ModuleDict({f"t{i}": Bias(float(i + 1)) for i in range(gradients.shape[0])})

    def parts(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, **{f"heads.{n}": h for n, h in self.heads.items()}}

    def losses(self) -> torch.Tensor:
        return torch.stack(
            [g @ self.encoder.theta + h.b**2 / 2 for g, h in zip(self.gradients, self.heads.values(), strict=True)]
        )


def aggregate(name: str, gradients, present=None, scale=identity, **options):
    """(theta.grad, heads' grads, weights) of one ``backward`` of strategy ``name`` on given gradients."""
    gradients = torch.as_tensor(np.asarray(gradients, dtype=np.float64))
    model = GivenGradients(gradients)
    weighting = create_weighting(name, [f"t{i}" for i in range(len(gradients))], **options).to(torch.float64)
    weighting.attach(model)
    present = torch.ones(len(gradients), dtype=torch.bool) if present is None else torch.tensor(present)
    losses = model.losses()
    total, weights = weighting.backward(losses, present, 0, scale)
    assert torch.equal(total, (losses.detach() * present).sum())
    heads = torch.stack([h.b.grad for h in model.heads.values()])
    return model.encoder.theta.grad, heads, weights


# ---- independent computations, from the papers' formulas ------------------------------------------


def pcgrad_by_hand(g: list[np.ndarray]) -> np.ndarray:
    """Yu et al. 2020, Algorithm 1, for two tasks (the order of the others does not matter)."""
    out = []
    for i, g_i in enumerate(g):
        pc = g_i.copy()
        for j, g_j in enumerate(g):
            if j != i and pc @ g_j < 0:
                pc = pc - (pc @ g_j) / (g_j @ g_j) * g_j
        out.append(pc)
    return sum(out)


def mgda_two_by_hand(g1: np.ndarray, g2: np.ndarray) -> float:
    """Sener and Koltun 2018, Algorithm 1 (two tasks): alpha of g1 in the minimum-norm point."""
    return float(np.clip((g2 - g1) @ g2 / ((g1 - g2) @ (g1 - g2)), 0.0, 1.0))


def cagrad_by_grid(g: np.ndarray, c: float) -> np.ndarray:
    """Liu et al. 2021, Algorithm 1, for two tasks: the dual minimised over a grid of the simplex,
    refined twice around the best point (to ~1e-10 in w)."""
    g0 = g.mean(0)
    k = c * np.linalg.norm(g0)
    low, high = 0.0, 1.0
    for _ in range(3):
        p = np.linspace(low, high, 20_001)
        gw = p[:, None] * g[0] + (1 - p)[:, None] * g[1]  # (N, n)
        best = int(np.argmin(gw @ g0 + k * np.linalg.norm(gw, axis=1)))
        width = (high - low) / 20_000
        low, high = max(0.0, p[best] - 2 * width), min(1.0, p[best] + 2 * width)
    best_gw = gw[best]
    return g0 + k * best_gw / np.linalg.norm(best_gw)


# ---- PCGrad ---------------------------------------------------------------------------------------


def test_pcgrad_projects_conflicting_gradients_on_each_others_normal_plane():
    g1, g2 = np.array([1.0, 0.0]), np.array([-1.0, 1.0])  # g1 . g2 = -1 < 0
    # by hand: g1^PC = g1 + g2 / 2 = (0.5, 0.5), g2^PC = g2 + g1 = (0, 1)
    expected = pcgrad_by_hand([g1, g2])
    np.testing.assert_allclose(expected, [0.5, 1.5])
    grad, heads, weights = aggregate("pcgrad", [g1, g2])
    np.testing.assert_allclose(grad.numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(weights.numpy(), [2.0, 1.5], rtol=1e-12)  # d = 2 g1 + 1.5 g2
    torch.testing.assert_close(heads, torch.tensor([1.0, 2.0], dtype=torch.float64))  # each head: its own loss


def test_pcgrad_leaves_gradients_that_do_not_conflict_as_their_sum():
    g = [[1.0, 0.5, 0.0], [0.2, 1.0, 0.0], [0.0, 0.1, 3.0]]  # every dot product >= 0
    grad, _, weights = aggregate("pcgrad", g)
    np.testing.assert_allclose(grad.numpy(), np.sum(g, axis=0), rtol=1e-12)
    assert torch.equal(weights, torch.ones(3, dtype=torch.float64))


def test_pcgrad_is_reproducible_and_leaves_the_global_random_stream_alone():
    g = [[1.0, 0.0, 0.0], [-0.8, 1.0, 0.0], [-0.3, -0.9, 1.0]]  # order-dependent projections
    state = torch.random.get_rng_state()
    first = aggregate("pcgrad", g)[0]
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(aggregate("pcgrad", g)[0], first)


# ---- MGDA -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("g1", "g2"),
    [
        ([1.0, 0.0], [0.0, 2.0]),  # interior: alpha_1 = 4/5
        ([1.0, 0.0], [-1.0, 1.0]),  # conflicting
        ([1.0, 0.0], [2.0, 1.0]),
    ],  # clipped: the min-norm point is g1
    ids=["orthogonal", "conflicting", "clipped"],
)
def test_mgda_finds_the_minimum_norm_convex_combination_of_two_gradients(g1, g2):
    g1, g2 = np.array(g1), np.array(g2)
    alpha = mgda_two_by_hand(g1, g2)
    expected = 2 * (alpha * g1 + (1 - alpha) * g2)  # times P = 2: the scale of the sum
    grad, heads, weights = aggregate("mgda", [g1, g2])
    np.testing.assert_allclose(grad.numpy(), expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(weights.numpy(), [2 * alpha, 2 * (1 - alpha)], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(heads, torch.tensor([1.0, 2.0], dtype=torch.float64))
    if 0 < alpha < 1:  # the minimum-norm point improves both tasks equally
        assert expected @ g1 == pytest.approx(expected @ g2)


def test_mgda_by_hand_for_the_orthogonal_case():
    grad, _, weights = aggregate("mgda", [[1.0, 0.0], [0.0, 2.0]])
    np.testing.assert_allclose(weights.numpy(), [1.6, 0.4], rtol=1e-9)
    np.testing.assert_allclose(grad.numpy(), [1.6, 0.8], rtol=1e-9)


# ---- CAGrad ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("c", [0.2, 0.5, 0.9])
@pytest.mark.parametrize(
    "g",
    [[[1.0, 0.0], [-0.5, 1.0]], [[2.0, 1.0], [-1.0, 0.5]], [[1.0, 0.2], [0.8, 1.0]]],
    ids=["conflicting", "opposed", "agreeing"],
)
def test_cagrad_update_on_two_gradients_matches_a_grid_search_of_the_dual(g, c):
    g = np.array(g)
    expected = 2 * cagrad_by_grid(g, c)  # times P = 2
    grad, _, weights = aggregate("cagrad", g, c=c)
    np.testing.assert_allclose(grad.numpy(), expected, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(weights.numpy() @ g, grad.numpy(), rtol=1e-9)
    rescaled, _, _ = aggregate("cagrad", g, c=c, rescale=True)
    np.testing.assert_allclose(rescaled.numpy(), grad.numpy() / (1 + c * c), rtol=1e-9)


def test_cagrad_maximises_the_worst_improvement_in_the_ball_around_the_mean():
    # the primal (Liu et al. eq. 3), checked against random directions, independently of the dual solver
    rng = np.random.default_rng(0)
    g = np.array([[1.0, 0.3, -0.2], [-0.6, 1.0, 0.4], [0.1, -0.7, 1.0]])
    c = 0.6
    grad, _, _ = aggregate("cagrad", g, c=c)
    d = grad.numpy() / 3
    g0 = g.mean(0)
    k = c * np.linalg.norm(g0)
    assert np.linalg.norm(d - g0) == pytest.approx(k, rel=1e-6)  # on the ball's boundary
    u = rng.normal(size=(50_000, 3))
    candidates = g0 + k * u / np.linalg.norm(u, axis=1, keepdims=True)
    assert (g @ d).min() >= (candidates @ g.T).min(axis=1).max() - 1e-6


def test_cagrad_with_c_zero_is_the_plain_sum():
    g = [[1.0, 0.0], [-0.5, 1.0], [0.3, -2.0]]
    grad, _, weights = aggregate("cagrad", g, c=0.0)
    np.testing.assert_allclose(grad.numpy(), np.sum(g, axis=0), rtol=1e-12)
    np.testing.assert_allclose(weights.numpy(), [1.0, 1.0, 1.0])


def test_cagrad_on_identical_or_opposite_gradients():
    grad, _, _ = aggregate("cagrad", [[1.0, 2.0], [1.0, 2.0]], c=0.5)  # g_w = g_0 = g: d = (1 + c) g
    np.testing.assert_allclose(grad.numpy(), 2 * 1.5 * np.array([1.0, 2.0]), rtol=1e-9)
    grad, _, _ = aggregate("cagrad", [[1.0, 2.0], [-1.0, -2.0]], c=0.5)  # g_0 = 0: no direction helps both
    np.testing.assert_allclose(grad.numpy(), [0.0, 0.0], atol=1e-12)


def test_the_cagrad_dual_solver_reaches_the_optimum_of_a_three_task_problem():
    g = np.array([[1.0, 0.3, -0.2, 0.0], [-0.6, 1.0, 0.4, 0.2], [0.1, -0.7, 1.0, -0.3]])
    m, c = g @ g.T, 0.4
    w = cagrad_dual(m, c)
    assert w.min() >= 0 and w.sum() == pytest.approx(1.0)
    b = np.full(3, 1 / 3)
    k = c * math.sqrt(b @ m @ b)

    def f(v):  # (N, 3) -> (N,)
        return v @ (m @ b) + k * np.sqrt(np.einsum("ni,ij,nj->n", v, m, v))

    i, j = np.meshgrid(np.arange(401), np.arange(401), indexing="ij")
    keep = i + j <= 400
    grid = np.stack([i[keep], j[keep], 400 - i[keep] - j[keep]], axis=1) / 400
    assert f(w[None])[0] <= f(grid).min() + 1e-9


def test_simplex_projection():
    np.testing.assert_allclose(project_to_simplex(np.array([0.2, 0.3, 0.5])), [0.2, 0.3, 0.5])
    np.testing.assert_allclose(project_to_simplex(np.array([2.0, 0.0])), [1.0, 0.0])
    np.testing.assert_allclose(project_to_simplex(np.array([0.5, 0.5, -1.0])), [0.5, 0.5, 0.0])


# ---- what every conflict method shares --------------------------------------------------------------


@pytest.mark.parametrize("name", CONFLICT)
def test_an_absent_task_takes_no_part_and_its_head_gets_zero(name):
    g = [[1.0, 0.0], [-1.0, 1.0], [0.0, -3.0]]
    grad, heads, weights = aggregate(name, g, present=[True, False, True])
    alone, _, pair_weights = aggregate(name, [g[0], g[2]])
    torch.testing.assert_close(grad, alone)
    assert float(weights[1]) == 0.0
    torch.testing.assert_close(weights[[0, 2]], pair_weights)
    torch.testing.assert_close(heads, torch.tensor([1.0, 0.0, 3.0], dtype=torch.float64))


@pytest.mark.parametrize("name", CONFLICT)
def test_a_step_where_no_task_is_labelled_gives_zero_gradients(name):
    grad, heads, weights = aggregate(name, [[1.0, 0.0], [-1.0, 1.0]], present=[False, False])
    assert torch.equal(grad, torch.zeros(2, dtype=torch.float64))
    assert torch.equal(heads, torch.zeros(2, dtype=torch.float64))
    assert torch.equal(weights, torch.zeros(2, dtype=torch.float64))


@pytest.mark.parametrize("name", CONFLICT)
def test_a_single_present_task_gets_its_own_gradient_up_to_cagrads_factor(name):
    options = {"c": 0.4} if name == "cagrad" else {}
    grad, _, _ = aggregate(name, [[1.0, 2.0], [5.0, 5.0]], present=[True, False], **options)
    factor = 1.4 if name == "cagrad" else 1.0  # CAGrad with one task: (1 + c) g
    np.testing.assert_allclose(grad.numpy(), [factor, 2 * factor], rtol=1e-9)


@pytest.mark.parametrize("name", CONFLICT)
def test_the_loss_scale_multiplies_every_gradient_and_nothing_else(name):
    g = [[1.0, 0.0], [-1.0, 1.0], [0.2, -0.5]]
    grad, heads, weights = aggregate(name, g)
    scaled, scaled_heads, scaled_weights = aggregate(name, g, scale=lambda x: x * 1024.0)
    torch.testing.assert_close(scaled, grad * 1024)
    torch.testing.assert_close(scaled_heads, heads * 1024)
    torch.testing.assert_close(scaled_weights, weights)


@pytest.mark.parametrize("name", CONFLICT)
def test_combine_is_the_plain_sum_and_backward_needs_attach(name):
    weighting = create_weighting(name, ["a", "b"])
    assert weighting.custom_backward
    total, weights = weighting.combine(torch.tensor([2.0, 3.0]), torch.tensor([True, False]), 0)
    assert float(total) == 2.0 and torch.equal(weights, torch.tensor([1.0, 0.0]))
    with pytest.raises(MtlDataError, match=f"weighting {name}: attach"):
        weighting.backward(torch.ones(2, requires_grad=True), torch.ones(2, dtype=torch.bool), 0, identity)


@pytest.mark.parametrize(
    ("name", "options", "says"),
    [
        ("cagrad", {"c": -0.1}, "c must be a finite number >= 0"),
        ("cagrad", {"c": math.inf}, "c must be a finite number >= 0"),
        ("cagrad", {"rescale": 1}, "rescale must be true or false"),
        ("mgda", {"epsilon": 0}, "epsilon must be a finite number > 0"),
        ("mgda", {"max_iters": 2.5}, "max_iters must be an integer > 0"),
        ("gradnorm", {"alpha": -1}, "alpha must be a finite number >= 0"),
        ("gradnorm", {"alpha": True}, "alpha must be a finite number >= 0"),
        ("gradnorm", {"layer": ""}, "layer must be a module path"),
    ],
)
def test_refused_options(name, options, says):
    with pytest.raises(MtlDataError, match=f"weighting {name}: {says}"):
        create_weighting(name, ["a", "b"], **options)


# ---- GradNorm -------------------------------------------------------------------------------------


class Regressions(nn.Module):
    """Two linear regressions on a shared linear layer (the last shared layer: ``neck``)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.Identity()
        self.neck = nn.Linear(8, 8)
        self.heads = nn.ModuleDict({"a": nn.Linear(8, 1), "b": nn.Linear(8, 1)})

    def parts(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "neck": self.neck, **{f"heads.{n}": h for n, h in self.heads.items()}}

    def forward(self, x):
        z = self.neck(x)
        return {n: h(z)[:, 0] for n, h in self.heads.items()}


def regression_losses(model: nn.Module, step: int) -> torch.Tensor:
    """Task b's loss is 100 x a regression as hard as task a's."""
    g = torch.Generator().manual_seed(step)
    x = torch.randn(32, 8, generator=g)
    out = model(x)
    ya, yb = x @ torch.linspace(-1, 1, 8), x @ torch.linspace(1, -0.5, 8)
    return torch.stack([(out["a"] - ya).pow(2).mean(), 100 * (out["b"] - yb).pow(2).mean()])


def weighted_norms_on_the_shared_layer(model: Regressions, losses: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return torch.stack(
        [
            torch.autograd.grad(w * loss, model.neck.weight, retain_graph=True)[0].norm()
            for w, loss in zip(weights, losses, strict=True)
        ]
    )


def train_regressions(steps: int) -> tuple[Regressions, nn.Module, list[torch.Tensor]]:
    model = Regressions()
    weighting = create_weighting("gradnorm", ("a", "b"))
    weighting.attach(model)
    optimizer = torch.optim.Adam(
        [{"params": model.parameters(), "lr": 1e-2}, {"params": weighting.parameters(), "lr": 5e-2}]
    )
    seen = []
    for step in range(steps):
        losses = regression_losses(model, step)
        weighting.backward(losses, torch.ones(2, dtype=torch.bool), step, identity)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        weighting.on_step_end(step)
        seen.append(losses.detach())
    return model, weighting, seen


def test_gradnorm_balances_the_weighted_gradient_norms_of_a_loss_scaled_100x():
    start = Regressions()
    raw = weighted_norms_on_the_shared_layer(start, regression_losses(start, 0), torch.ones(2))
    assert float(raw[1] / raw[0]) > 50  # equal weights: b's gradient on W is ~65x a's

    steps = 150
    model, weighting, seen = train_regressions(steps)
    losses = regression_losses(model, steps)
    weights = weighting.weight.detach()
    assert float(weights.sum()) == pytest.approx(2.0, rel=1e-6)  # renormalised to T
    norms = weighted_norms_on_the_shared_layer(model, losses, weights)
    # the target: G_a / G_b = (r_a / r_b)^alpha, r from the losses relative to their first values
    relative = losses.detach() / seen[0]
    target = float((relative[0] / relative[1]) ** 1.5)
    assert float(norms[0] / norms[1]) == pytest.approx(target, rel=0.3)
    assert 0.5 < float(norms[0] / norms[1]) < 2
    # the weights make up for the scale: unweighted, the norms still differ by > 20x
    raw = weighted_norms_on_the_shared_layer(model, losses, torch.ones(2))
    assert float(raw[1] / raw[0]) > 20
    assert float(weights[0] / weights[1]) > 20


def test_gradnorm_weight_gradient_by_hand():
    # W = encoder.weight (2, 2) with L_t = k_t (W * U_t).sum(): grad_W L_t = k_t U_t, norm k_t ||U_t||
    class Hand(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Linear(2, 2, bias=False)
            nn.init.ones_(self.encoder.weight)

    model = Hand()
    weighting = create_weighting("gradnorm", ("a", "b", "c"), alpha=1.0)
    weighting.attach(model)
    assert weighting.shared_parameters == (model.encoder.weight,)
    u = [
        torch.tensor([[1.0, 0.0], [0.0, 0.0]]),
        torch.tensor([[3.0, 4.0], [0.0, 0.0]]),
        torch.tensor([[0.0, 0.0], [0.0, 1.0]]),
    ]

    def losses(k):
        return torch.stack([k[t] * (model.encoder.weight * u[t]).sum() for t in range(3)])

    # step 0: every task present, losses 2, 7, 8 (W = ones): L(0) set, r = 1, G = (2, 5, 8), mean 5
    k0 = (2.0, 1.0, 8.0)
    weighting.backward(losses(k0), torch.tensor([True, True, True]), 0, identity)
    norms = torch.tensor([2.0, 5.0, 8.0])
    # d/dw_t |w_t n_t - 5| = sign(w_t n_t - 5) n_t, with w = 1
    torch.testing.assert_close(weighting.weight.grad, torch.sign(norms - 5) * norms)
    torch.testing.assert_close(weighting.initial, torch.tensor([2.0, 7.0, 8.0]))
    assert torch.equal(model.encoder.weight.grad, sum(k * ut for k, ut in zip(k0, u, strict=True)))  # w = 1
    weighting.weight.grad = None
    model.encoder.weight.grad = None
    weighting.on_step_end(0)

    # step 1: c absent; losses a 1 (L~ 0.5), b 14 (L~ 2): r = (0.4, 1.6); G = (1, 10), mean 5.5
    with torch.no_grad():
        weighting.weight.copy_(torch.tensor([1.5, 0.5, 1.0]))
    k1 = (1.0, 2.0, 0.0)
    _, weights = weighting.backward(losses(k1), torch.tensor([True, True, False]), 1, identity)
    torch.testing.assert_close(weights, torch.tensor([1.5, 0.5, 0.0]))
    g = torch.tensor([1.5 * 1.0, 0.5 * 10.0])
    target = g.mean() * torch.tensor([0.4, 1.6])
    expected = torch.sign(g - target) * torch.tensor([1.0, 10.0])
    torch.testing.assert_close(weighting.weight.grad, torch.cat([expected, torch.zeros(1)]))
    # the model's gradient is that of sum w_t L_t with w constant
    torch.testing.assert_close(model.encoder.weight.grad, 1.5 * 1.0 * u[0] + 0.5 * 2.0 * u[1])

    # an optimizer step moves a and b (and would move c through momentum); renormalisation: a + b keep 2, c keeps 1
    with torch.no_grad():
        weighting.weight.copy_(torch.tensor([3.0, 1.0, 7.0]))
    weighting.on_step_end(1)
    torch.testing.assert_close(weighting.weight.detach(), torch.tensor([1.5, 0.5, 1.0]))


def test_gradnorm_keeps_absent_weights_under_adam_momentum_and_sums_to_t():
    model = Regressions()
    weighting = create_weighting("gradnorm", ("a", "b"))
    weighting.attach(model)
    optimizer = torch.optim.Adam(weighting.parameters(), lr=0.1)
    for step in range(6):
        present = torch.tensor([True, step < 3])
        before = weighting.weight.detach().clone()
        weighting.backward(regression_losses(model, step) * present, present, step, identity)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        weighting.on_step_end(step)
        if step >= 3:  # b absent: its weight is as it was, a keeps the sum it had
            assert float(weighting.weight.detach()[1]) == float(before[1])
        assert float(weighting.weight.detach().sum()) == pytest.approx(2.0)
    assert not torch.equal(weighting.weight.detach(), torch.ones(2))


def test_gradnorm_scaled_losses_scale_the_weight_gradient():
    grads = []
    for scale in (identity, lambda x: x * 512.0):
        model = Regressions()
        weighting = create_weighting("gradnorm", ("a", "b"))
        weighting.attach(model)
        weighting.backward(regression_losses(model, 0), torch.ones(2, dtype=torch.bool), 0, scale)
        grads.append((weighting.weight.grad.clone(), model.neck.weight.grad.clone()))
    torch.testing.assert_close(grads[1][0], grads[0][0] * 512)
    torch.testing.assert_close(grads[1][1], grads[0][1] * 512)


def test_gradnorm_backward_needs_attach():
    with pytest.raises(MtlDataError, match="weighting gradnorm: attach"):
        create_weighting("gradnorm", ["a"]).backward(
            torch.ones(1, requires_grad=True), torch.ones(1, dtype=torch.bool), 0, identity
        )


@pytest.mark.parametrize(
    ("model_name", "layer", "count"), [("resnet18-fpn", "neck.output", 4), ("resnet18-bifpn", "neck.layers.0", 12)]
)
def test_gradnorms_last_shared_layer_of_the_model_family(model_name, layer, count):
    from mtl_data.train.models import create_model

    model = create_model(model_name, tasks=["sign"], neck_channels=8)
    name, params = last_shared_layer(model)
    assert name == layer and len(params) == count
    owned = {id(p) for p in model.get_submodule(layer).parameters()}
    assert all(id(p) in owned and p.ndim >= 2 for p in params)
    chosen, params = last_shared_layer(model, "encoder.layer4")
    assert chosen == "encoder.layer4" and all(p.ndim >= 2 for p in params)
    with pytest.raises(MtlDataError, match="layer 'neck.nope' is not a module of the model"):
        last_shared_layer(model, "neck.nope")


# ---- DDP: two gloo processes against one process on the whole batch ---------------------------------

TASKS = ("a", "b", "c")
BATCH = 8


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.Sequential(nn.Linear(3, 6), nn.Tanh())
        self.neck = nn.Sequential(nn.Linear(6, 5), nn.Tanh())
        self.heads = nn.ModuleDict({"a": nn.Linear(5, 1), "b": nn.Linear(5, 2), "c": nn.Linear(5, 1)})

    def parts(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "neck": self.neck, **{f"heads.{n}": h for n, h in self.heads.items()}}

    def forward(self, x):
        z = self.neck(self.encoder(x))
        return {n: h(z) for n, h in self.heads.items()}


def step_batch(step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x (B, 3), y (B, 4), labelled (B, T)): partial labels; step 1 labels c only in the second half
    (rank 1's samples), step 2 labels b nowhere."""
    g = torch.Generator().manual_seed(100 + step)
    x, y = torch.randn(BATCH, 3, generator=g), torch.randn(BATCH, 4, generator=g)
    labelled = torch.rand(BATCH, 3, generator=g) < 0.7
    labelled[0, :] = True
    if step == 1:
        labelled[: BATCH // 2, 2] = False
        labelled[BATCH - 1, 2] = True
    if step == 2:
        labelled[:, 1] = False
    return x, y, labelled


def train_tiny(name: str, rank: int, world: int, steps: int = 4) -> dict[str, torch.Tensor]:
    model = Tiny()
    weighting = create_weighting(name, TASKS)
    weighting.attach(model)
    net = nn.parallel.DistributedDataParallel(model, static_graph=True) if world > 1 else model
    groups = [{"params": list(model.parameters()), "lr": 0.2}]
    if list(weighting.parameters()):
        groups.append({"params": list(weighting.parameters()), "lr": 0.05})
    optimizer = torch.optim.SGD(groups, lr=0.2, momentum=0.5)
    history = []
    for step in range(steps):
        x, y, labelled = step_batch(step)
        share = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
        x, y, labelled = x[share], y[share], labelled[share]
        counts = step_batch(step)[2].sum(0).to(torch.float32)  # (T,) the global labelled counts
        out = net(x)
        per_sample = torch.stack(
            [(out["a"][:, 0] - y[:, 0]).pow(2), (out["b"] - y[:, 1:3]).pow(2).sum(1), (out["c"][:, 0] - y[:, 3]).abs()],
            dim=1,
        )  # (b, T)
        # steps.task_losses: world x this rank's masked sum / the global count
        losses = world * (per_sample * labelled).sum(0) / counts.clamp_min(1)
        _, weights = weighting.backward(losses, counts > 0, step, identity)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        weighting.on_step_end(step)
        history.append(weights.detach().clone())
    return {
        "params": torch.cat([p.detach().reshape(-1) for p in model.parameters()]),
        "state": torch.cat(
            [v.reshape(-1).to(torch.float32) for v in weighting.state_dict().values()] or [torch.zeros(0)]
        ),
        "weights": torch.stack(history),
    }


def _ddp_rank(rank: int, world: int, init: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        torch.save({name: train_tiny(name, rank, world) for name in (*CONFLICT, "gradnorm")}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_under_ddp_two_ranks_train_exactly_as_one_process_on_the_whole_batch(tmp_path):
    mp.spawn(_ddp_rank, args=(2, f"file://{tmp_path / 'store'}", str(tmp_path / "rank")), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank.{r}") for r in range(2)]
    for name in (*CONFLICT, "gradnorm"):
        single = train_tiny(name, 0, 1)
        start = torch.cat([p.detach().reshape(-1) for p in Tiny().parameters()])
        assert not torch.allclose(single["params"], start), name  # it trained
        for rank, result in enumerate(ranks):
            for key in ("params", "state", "weights"):
                torch.testing.assert_close(
                    result[name][key],
                    single[key],
                    rtol=1e-5,
                    atol=1e-6,
                    msg=lambda m, n=name, r=rank, k=key: f"{n} rank {r} {k}: {m}",
                )
        assert torch.equal(ranks[0][name]["params"], ranks[1][name]["params"]), name
    # the steps had conflicts worth the name: the methods' weights differ from equal's
    assert not torch.allclose(ranks[0]["mgda"]["weights"][0], torch.ones(3))
    assert float(ranks[0]["pcgrad"]["weights"][2][1]) == 0.0  # b absent at step 2


def test_the_ddp_reference_differs_between_methods():
    results = {name: train_tiny(name, 0, 1)["params"] for name in (*CONFLICT, "gradnorm")}
    for a, b in itertools.combinations(results, 2):
        assert not torch.allclose(results[a], results[b]), (a, b)
