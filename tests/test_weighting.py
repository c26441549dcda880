"""Weighting strategies: the contract every registered strategy keeps, then equal and static.

The contract tests are parametrized over ``list_weightings()`` (with the extra configurations of
``CONFIGS``), so a new strategy is tested the moment its file exists.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from mtl_data.errors import MtlDataError
from mtl_data.train.weighting import Weighting, create_weighting, list_weightings, register_weighting, weighting_class

TASKS = ("seg", "depth", "det2d")

#: options a strategy is also tested with besides its defaults (a stateful mode, before and
#: after its state freezes within SCHEDULE); strategies not named here are tested with defaults.
CONFIGS: dict[str, list[dict]] = {
    "static": [{}, {"weights": {"seg": 2.0, "det2d": 0.25}}, {"first_steps": 2}, {"first_steps": 4}],
    "dwa": [{}, {"temperature": 0.5}],
    "fls": [{}, {"focus": ["seg"]}, {"focus": ["seg", "det2d"]}],
    "learned": [{}, {"scale": "sum"}],
    "uncertainty": [{}, {"kinds": {"seg": "regression"}, "init_log_variance": -1.0}],
    "curriculum": [
        {},
        {"schedule": [{"until": 2, "weights": {"seg": 2.0}}, {"until": 5, "weights": {"depth": 0.0, "det2d": 3.0}}]},
        {
            "unit": "epoch",
            "schedule": [{"until": 1, "weights": {"seg": 2.0}}, {"until": 3, "weights": {"depth": 0.0, "det2d": 3.0}}],
        },
    ],
    "async": [{}, {"frequencies": {"seg": 2, "det2d": 3}, "weights": {"depth": 0.5}}],
}

#: (losses, present) per step, in TASKS order; an absent task's loss entry is 0, as the trainer
#: gives it. Every task is absent at least once, and once no task is labelled at all.
SCHEDULE: list[tuple[list[float], list[bool]]] = [
    ([1.5, 0.25, 3.0], [True, True, True]),
    ([2.0, 0.0, 5.0], [True, False, True]),
    ([0.0, 0.5, 4.0], [False, True, True]),
    ([1.0, 0.75, 0.0], [True, True, False]),
    ([0.0, 0.0, 0.0], [False, False, False]),
    ([0.5, 0.0, 0.0], [True, False, False]),
    ([3.0, 1.0, 2.0], [True, True, True]),
]


def cases() -> list:
    """(name, options) for every registered strategy: its defaults, or its ``CONFIGS``."""
    out = []
    for name in list_weightings():
        for options in CONFIGS.get(name, [{}]):
            label = ",".join(f"{k}={v}" for k, v in options.items()) or "defaults"
            out.append(pytest.param(name, options, id=f"{name}[{label}]"))
    return out


def step_inputs(i: int) -> tuple[torch.Tensor, torch.Tensor]:
    losses, present = SCHEDULE[i % len(SCHEDULE)]
    return torch.tensor(losses), torch.tensor(present)


def run_steps(weighting: Weighting, steps: range) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``combine`` then ``on_step_end`` on each step (an epoch ends every 3 steps); (total, weights) detached."""
    out = []
    for step in steps:
        losses, present = step_inputs(step)
        total, weights = weighting.combine(losses, present, step)
        out.append((total.detach().clone(), weights.detach().clone()))
        weighting.on_step_end(step)
        if step % 3 == 2:
            weighting.on_epoch_end(step // 3)
    return out


def snapshot(weighting: Weighting) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in weighting.state_dict().items()}


# ---- the contract, for every registered strategy ------------------------------------------------


def test_the_registry_holds_equal_and_static_and_every_configured_strategy():
    assert {"equal", "static"} <= set(list_weightings())
    assert set(CONFIGS) <= set(list_weightings()), "CONFIGS names a strategy that is not registered"
    assert list_weightings() == sorted(list_weightings())


@pytest.mark.parametrize(("name", "options"), cases())
def test_an_absent_task_gets_weight_zero_and_its_state_does_not_move(name, options):
    weighting = create_weighting(name, TASKS, **options)
    for step in range(2 * len(SCHEDULE)):
        losses, present = step_inputs(step)
        before = snapshot(weighting)
        total, weights = weighting.combine(losses, present, step)
        assert weights.shape == (len(TASKS),)
        assert torch.equal(weights[~present], torch.zeros(int((~present).sum()))), (step, weights)
        assert bool(torch.all(weights[present] >= 0)) and bool(torch.all(torch.isfinite(weights)))
        assert total.shape == () and math.isfinite(float(total.detach()))
        for key, value in weighting.state_dict().items():
            if value.dim() and value.shape[0] == len(TASKS):  # per-task state: task axis first
                assert torch.equal(value[~present], before[key][~present]), (step, key)
        weighting.on_step_end(step)
        if step % 3 == 2:  # epochs too, so the epoch-based strategies' state is in play
            weighting.on_epoch_end(step // 3)


@pytest.mark.parametrize(("name", "options"), cases())
@pytest.mark.parametrize(
    "labelled",
    [[False, True, True], [True, False, True], [False, False, True], [False, False, False]],
    ids=["seg-absent", "depth-absent", "two-absent", "all-absent"],
)
def test_the_total_is_finite_and_gradients_nan_free_when_an_absent_loss_is_zero(name, options, labelled):
    weighting = create_weighting(name, TASKS, **options)
    run_steps(weighting, range(9))  # past any warm-up (three epochs), so remembered state is in play
    present = torch.tensor(labelled)
    theta = torch.tensor([0.7, -1.2, 2.0], requires_grad=True)
    losses = theta.pow(2) * present  # (T,) 0 where absent, still in the graph, as a masked mean is
    total, weights = weighting.combine(losses, present, 9)
    total.backward()
    assert math.isfinite(float(total.detach()))
    assert bool(torch.all(torch.isfinite(theta.grad))), theta.grad
    assert torch.equal(theta.grad[~present], torch.zeros(int((~present).sum())))
    assert torch.equal(weights.detach()[~present], torch.zeros(int((~present).sum())))
    for parameter in weighting.parameters():
        assert parameter.grad is None or bool(torch.all(torch.isfinite(parameter.grad)))


@pytest.mark.parametrize(("name", "options"), cases())
def test_the_state_dict_round_trips_into_a_fresh_instance(name, options):
    trained = create_weighting(name, TASKS, **options)
    run_steps(trained, range(3))
    fresh = create_weighting(name, TASKS, **options)
    fresh.load_state_dict(snapshot(trained))
    assert snapshot(fresh).keys() == snapshot(trained).keys()
    for (total_a, weights_a), (total_b, weights_b) in zip(
        run_steps(trained, range(3, 9)), run_steps(fresh, range(3, 9)), strict=True
    ):
        assert torch.equal(weights_a, weights_b)
        assert torch.equal(total_a, total_b)
    for key, value in snapshot(trained).items():
        assert torch.equal(value, fresh.state_dict()[key]), key


@pytest.mark.parametrize(("name", "options"), cases())
def test_attaching_a_model_adds_nothing_to_the_strategys_parameters_or_state(name, options):
    weighting = create_weighting(name, TASKS, **options)
    keys, params = set(weighting.state_dict()), list(weighting.parameters())
    model = nn.Linear(4, 2)
    weighting.attach(model)
    assert set(weighting.state_dict()) == keys
    assert [id(p) for p in weighting.parameters()] == [id(p) for p in params]
    assert all(any(p is q for q in model.parameters()) for p in weighting.shared_parameters)


@pytest.mark.parametrize(("name", "options"), cases())
def test_combine_refuses_inputs_of_the_wrong_shape_or_dtype(name, options):
    weighting = create_weighting(name, TASKS, **options)
    with pytest.raises(ValueError, match="shape"):
        weighting.combine(torch.ones(2), torch.ones(2, dtype=torch.bool), 0)
    with pytest.raises(ValueError, match="bool"):
        weighting.combine(torch.ones(3), torch.ones(3), 0)


# ---- the registry -------------------------------------------------------------------------------


def test_an_unknown_strategy_is_an_error_listing_the_registered_ones():
    with pytest.raises(MtlDataError, match="unknown weighting 'nope'") as info:
        create_weighting("nope", TASKS)
    assert ", ".join(list_weightings()) in str(info.value)


def test_an_unknown_option_is_an_error_naming_it_and_the_known_ones():
    with pytest.raises(
        MtlDataError,
        match=r"weighting static: unknown option\(s\) alpha, beta; known: "
        r"first_steps, rule, stats, weights",
    ):
        create_weighting("static", TASKS, beta=1, alpha=2)
    with pytest.raises(MtlDataError, match=r"weighting equal: unknown option\(s\) weights; known: none"):
        create_weighting("equal", TASKS, weights={"seg": 1.0})


def test_a_refused_option_value_is_an_error_naming_the_strategy_and_the_option():
    with pytest.raises(MtlDataError, match="weighting static: first_steps must be an integer > 0, got 0"):
        create_weighting("static", TASKS, first_steps=0)


def test_no_task_or_a_task_given_twice_is_an_error():
    with pytest.raises(MtlDataError, match="no task"):
        create_weighting("equal", [])
    with pytest.raises(MtlDataError, match="task seg given twice"):
        create_weighting("equal", ["seg", "depth", "seg"])


def test_a_name_registered_twice_or_a_nameless_strategy_is_refused():
    with pytest.raises(ValueError, match="registered twice"):
        register_weighting(weighting_class("equal"))

    class Nameless(Weighting):
        pass

    with pytest.raises(ValueError, match="has no name"):
        register_weighting(Nameless)
    assert "" not in list_weightings()


# ---- equal --------------------------------------------------------------------------------------


def test_equal_sums_the_present_losses_with_weight_one():
    weighting = create_weighting("equal", TASKS)
    total, weights = weighting.combine(torch.tensor([1.5, 0.0, 4.0]), torch.tensor([True, False, True]), 0)
    assert torch.equal(weights, torch.tensor([1.0, 0.0, 1.0]))
    assert float(total) == 5.5
    assert list(weighting.parameters()) == [] and weighting.state_dict() == {}


def test_equal_ignores_a_nan_left_in_an_absent_entry():
    losses = torch.tensor([2.0, math.nan, 1.0], requires_grad=True)
    total, _ = create_weighting("equal", TASKS).combine(losses, torch.tensor([True, False, True]), 0)
    total.backward()
    assert float(total.detach()) == 3.0
    assert torch.equal(losses.grad, torch.tensor([1.0, 0.0, 1.0]))


# ---- static: hand weights -----------------------------------------------------------------------


def test_static_hand_weights_are_used_as_written_and_missing_tasks_weigh_one():
    weighting = create_weighting("static", TASKS, weights={"seg": 2.0, "det2d": 0.25})
    total, weights = weighting.combine(torch.tensor([1.0, 3.0, 8.0]), torch.tensor([True, True, True]), 0)
    assert torch.equal(weights, torch.tensor([2.0, 1.0, 0.25]))
    assert float(total) == 2.0 + 3.0 + 2.0
    _, weights = weighting.combine(torch.tensor([1.0, 0.0, 8.0]), torch.tensor([True, False, True]), 1)
    assert torch.equal(weights, torch.tensor([2.0, 0.0, 0.25]))
    assert list(weighting.parameters()) == []


def test_static_without_options_weighs_every_present_task_one():
    _, weights = create_weighting("static", TASKS).combine(torch.ones(3), torch.tensor([True, False, True]), 0)
    assert torch.equal(weights, torch.tensor([1.0, 0.0, 1.0]))


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"weights": {"seg": -1.0}}, "weights must be finite numbers >= 0; refused: seg=-1.0"),
        ({"weights": {"seg": math.nan}}, "refused: seg=nan"),
        ({"weights": {"seg": math.inf}}, "refused: seg=inf"),
        ({"weights": {"seg": True}}, "refused: seg=True"),
        ({"weights": {"seg": "2"}}, "refused: seg='2'"),
        ({"weights": [1.0, 2.0]}, "weights must be a {task: weight} table"),
        (
            {"weights": {"lane": 1.0, "seg": 2.0}},
            ("weights name task(s) lane that the run does not train; its tasks: seg, depth, det2d"),
        ),
        ({"weights": {"seg": 0.0, "depth": 0, "det2d": 0.0}}, "every weight is 0"),
        ({"weights": {"seg": 1.0}, "first_steps": 3}, "weights and first_steps are exclusive"),
        ({"stats": "s.json", "rule": "inverse_frequency", "first_steps": 3}, "stats and first_steps are exclusive"),
        ({"weights": {}, "stats": "s.json", "rule": "inverse_frequency"}, "weights and stats are exclusive"),
        (
            {"stats": "s.json"},
            ("stats s.json needs a rule: one of inverse_frequency, sqrt_inverse_frequency, effective_number"),
        ),
        ({"rule": "inverse_frequency"}, "rule 'inverse_frequency' picks weights from a stats report: set stats too"),
        ({"stats": 3, "rule": "inverse_frequency"}, "stats must be the path"),
        ({"first_steps": -2}, "first_steps must be an integer > 0, got -2"),
        ({"first_steps": 1.5}, "first_steps must be an integer > 0, got 1.5"),
        ({"first_steps": True}, "first_steps must be an integer > 0, got True"),
    ],
)
def test_static_refuses_bad_options_with_one_error_naming_them(options, says):
    with pytest.raises(MtlDataError) as info:
        create_weighting("static", TASKS, **options)
    assert str(info.value).startswith("weighting static: ")
    assert says in str(info.value)


# ---- static: a stats report ---------------------------------------------------------------------


@pytest.fixture
def stats_report(synth_shards, tmp_path, cli) -> Path:
    """``mtl-data stats --json`` of the synthetic shards."""
    path = tmp_path / "stats.json"
    assert cli("stats", synth_shards, "--json", path).code == 0
    return path


@pytest.mark.parametrize("rule", ["inverse_frequency", "sqrt_inverse_frequency", "effective_number"])
def test_static_takes_the_reports_weights_renormalised_to_mean_one_over_the_run(stats_report, rule):
    table = json.loads(stats_report.read_text())["recommendations"]["task_weights"][rule]
    tasks = ("sign", "seg", "depth")
    assert set(tasks) <= set(table)
    raw = [table[t] for t in tasks]
    expected = torch.tensor([w / (sum(raw) / 3) for w in raw])
    weighting = create_weighting("static", tasks, stats=str(stats_report), rule=rule)
    total, weights = weighting.combine(torch.tensor([1.0, 2.0, 4.0]), torch.tensor([True, True, True]), 0)
    torch.testing.assert_close(weights, expected)
    torch.testing.assert_close(total, expected @ torch.tensor([1.0, 2.0, 4.0]))
    assert float(weights.mean()) == pytest.approx(1.0)
    # the ratios are the report's
    assert float(weights[0] / weights[1]) == pytest.approx(table["sign"] / table["seg"], rel=1e-5)
    _, weights = weighting.combine(torch.tensor([1.0, 0.0, 4.0]), torch.tensor([True, False, True]), 1)
    assert float(weights[1]) == 0.0


def test_the_reports_inverse_frequency_weighs_a_rarely_labelled_task_more(stats_report):
    report = json.loads(stats_report.read_text())
    labelled = report["recommendations"]["basis"]["labelled"]
    rare, common = min(labelled, key=labelled.get), max(labelled, key=labelled.get)
    assert labelled[rare] < labelled[common]
    _, weights = create_weighting("static", (rare, common), stats=str(stats_report), rule="inverse_frequency").combine(
        torch.ones(2), torch.ones(2, dtype=torch.bool), 0
    )
    assert float(weights[0] / weights[1]) == pytest.approx(labelled[common] / labelled[rare], rel=1e-5)


def edit_report(stats_report: Path, edit) -> Path:
    report = json.loads(stats_report.read_text())
    edit(report)
    stats_report.write_text(json.dumps(report))
    return stats_report


def test_static_from_a_missing_report_names_the_file(tmp_path):
    path = tmp_path / "none.json"
    with pytest.raises(MtlDataError, match=f"stats report {path}: cannot read the stats report"):
        create_weighting("static", TASKS, stats=str(path), rule="inverse_frequency")


def test_static_from_a_file_that_is_not_json_names_the_file(tmp_path):
    path = tmp_path / "stats.json"
    path.write_text("seg 1.0\n")
    with pytest.raises(MtlDataError, match=f"stats report {path}: not a JSON stats report"):
        create_weighting("static", TASKS, stats=str(path), rule="inverse_frequency")


def test_static_from_json_without_task_weights_says_how_to_write_them(tmp_path):
    path = tmp_path / "stats.json"
    path.write_text(json.dumps({"recommendations": {"mix": {}}}))
    with pytest.raises(
        MtlDataError,
        match=f"stats report {path}: no recommendations.task_weights table "
        r"\(write it with `mtl-data stats --json`\)",
    ):
        create_weighting("static", TASKS, stats=str(path), rule="inverse_frequency")


def test_static_with_a_rule_the_report_lacks_lists_the_rules_it_has(stats_report):
    edit_report(stats_report, lambda r: r["recommendations"]["task_weights"].pop("effective_number"))
    with pytest.raises(MtlDataError) as info:
        create_weighting("static", TASKS, stats=str(stats_report), rule="effective_number")
    assert str(info.value) == (
        f"weighting static: stats report {stats_report}: no task-weight rule "
        "'effective_number'; the report has inverse_frequency, sqrt_inverse_frequency"
    )


def test_static_with_a_task_the_report_does_not_weigh_names_the_task_and_the_file(stats_report):
    edit_report(stats_report, lambda r: r["recommendations"]["task_weights"]["inverse_frequency"].pop("depth"))
    with pytest.raises(
        MtlDataError,
        match=f"stats report {stats_report}: recommendations.task_weights."
        r"inverse_frequency has no weight for depth \(no training sample",
    ):
        create_weighting("static", TASKS, stats=str(stats_report), rule="inverse_frequency")


@pytest.mark.parametrize("bad", [-1.0, "high", None])
def test_static_refuses_a_report_weight_that_is_not_a_finite_number(stats_report, bad):
    edit_report(stats_report, lambda r: r["recommendations"]["task_weights"]["inverse_frequency"].update(seg=bad))
    with pytest.raises(MtlDataError, match=f"stats report {stats_report}: .* not finite numbers >= 0: seg="):
        create_weighting("static", TASKS, stats=str(stats_report), rule="inverse_frequency")


def test_static_report_weights_are_kept_in_the_state_not_reread(stats_report):
    weighting = create_weighting("static", TASKS, stats=str(stats_report), rule="sqrt_inverse_frequency")
    state = snapshot(weighting)
    edit_report(stats_report, lambda r: r["recommendations"]["task_weights"]["sqrt_inverse_frequency"].update(seg=50.0))
    resumed = create_weighting("static", TASKS, stats=str(stats_report), rule="sqrt_inverse_frequency")
    assert not torch.equal(resumed.state_dict()["table"], state["table"])
    resumed.load_state_dict(state)
    assert torch.equal(resumed.fixed_weights(), weighting.fixed_weights())


# ---- static: the first steps' loss ratio (Leang et al. eq. 4) -----------------------------------


def test_static_first_steps_weights_from_the_mean_losses_by_hand():
    # N = 3; depth is absent at step 1, det2d at step 0.
    #   seg:   (2 + 4 + 6) / 3 = 4        depth: (10 + 20) / 2 = 15        det2d: (1 + 3) / 2 = 2
    #   m_ref = 3 / (1/4 + 1/15 + 1/2) = 180/49;  w = m_ref / mean = 45/49, 12/49, 90/49 (mean 1)
    weighting = create_weighting("static", TASKS, first_steps=3)
    steps = [
        ([2.0, 10.0, 0.0], [True, True, False]),
        ([4.0, 0.0, 1.0], [True, False, True]),
        ([6.0, 20.0, 3.0], [True, True, True]),
    ]
    for step, (losses, present) in enumerate(steps):
        total, weights = weighting.combine(torch.tensor(losses), torch.tensor(present), step)
        assert torch.equal(weights, torch.tensor(present, dtype=torch.float32)), step  # 1 while measuring
        assert float(total) == sum(v for v, p in zip(losses, present, strict=True) if p)
    assert torch.equal(weighting.loss_sum, torch.tensor([12.0, 30.0, 4.0]))
    assert torch.equal(weighting.loss_count, torch.tensor([3.0, 2.0, 2.0]))
    expected = torch.tensor([float(Fraction(n, 49)) for n in (45, 12, 90)])
    losses = torch.tensor([4.0, 15.0, 2.0])
    total, weights = weighting.combine(losses, torch.tensor([True, True, True]), 3)
    torch.testing.assert_close(weights, expected)
    torch.testing.assert_close(weights * losses, torch.full((3,), 180 / 49))  # the same scale
    torch.testing.assert_close(total, torch.tensor(3 * 180 / 49))
    # fixed from step N on: later losses change nothing, an absent task still weighs 0
    _, weights = weighting.combine(torch.tensor([100.0, 0.0, 0.01]), torch.tensor([True, False, True]), 4)
    torch.testing.assert_close(weights, expected * torch.tensor([1.0, 0.0, 1.0]))
    assert torch.equal(weighting.loss_sum, torch.tensor([12.0, 30.0, 4.0]))
    assert torch.equal(weighting.loss_count, torch.tensor([3.0, 2.0, 2.0]))


def test_static_first_steps_with_two_tasks_is_leangs_loss_ratio():
    # eq. 4: w_seg = L_det / L_seg, w_det = 1, up to a common factor (here: mean 1)
    weighting = create_weighting("static", ("det2d", "seg"), first_steps=1)
    weighting.combine(torch.tensor([2.0, 0.5]), torch.tensor([True, True]), 0)
    _, weights = weighting.combine(torch.tensor([2.0, 0.5]), torch.tensor([True, True]), 1)
    torch.testing.assert_close(weights, torch.tensor([0.4, 1.6]))
    assert float(weights[1] / weights[0]) == pytest.approx(2.0 / 0.5)


def test_static_first_steps_a_task_never_present_keeps_weight_one():
    # det2d never labelled in steps 0..1: weight 1; seg and depth normalised between themselves
    weighting = create_weighting("static", TASKS, first_steps=2)
    for step in range(2):
        weighting.combine(torch.tensor([1.0, 3.0, 0.0]), torch.tensor([True, True, False]), step)
    _, weights = weighting.combine(torch.tensor([1.0, 3.0, 7.0]), torch.ones(3, dtype=torch.bool), 2)
    torch.testing.assert_close(weights, torch.tensor([1.5, 0.5, 1.0]))


def test_static_first_steps_a_task_whose_loss_was_zero_keeps_weight_one():
    weighting = create_weighting("static", TASKS, first_steps=1)
    weighting.combine(torch.tensor([0.0, 2.0, 4.0]), torch.ones(3, dtype=torch.bool), 0)
    _, weights = weighting.combine(torch.ones(3), torch.ones(3, dtype=torch.bool), 1)
    torch.testing.assert_close(weights, torch.tensor([1.0, 4 / 3, 2 / 3]))
    assert bool(torch.all(torch.isfinite(weights)))


def test_static_first_steps_survive_a_resume_in_the_middle_of_the_measurement():
    steps = [([2.0, 10.0, 1.0], [True, True, True]), ([4.0, 0.0, 3.0], [True, False, True])]
    weighting = create_weighting("static", TASKS, first_steps=2)
    weighting.combine(torch.tensor(steps[0][0]), torch.tensor(steps[0][1]), 0)
    resumed = create_weighting("static", TASKS, first_steps=2)
    resumed.load_state_dict(snapshot(weighting))
    forgetful = create_weighting("static", TASKS, first_steps=2)
    for w in (weighting, resumed, forgetful):
        w.combine(torch.tensor(steps[1][0]), torch.tensor(steps[1][1]), 1)
    torch.testing.assert_close(resumed.fixed_weights(), weighting.fixed_weights())
    # means 3, 10, 2 -> m_ref = 3 / (1/3 + 1/10 + 1/2) = 90/28; w = m_ref / mean
    torch.testing.assert_close(weighting.fixed_weights(), torch.tensor([30 / 28, 9 / 28, 45 / 28]))
    assert not torch.allclose(forgetful.fixed_weights(), weighting.fixed_weights())


def test_static_buffers_move_with_the_module():
    weighting = create_weighting("static", TASKS, first_steps=2).to(torch.float64)
    _, weights = weighting.combine(torch.ones(3, dtype=torch.float64), torch.ones(3, dtype=torch.bool), 0)
    assert weighting.loss_sum.dtype == torch.float64 and weights.dtype == torch.float64


# ---- static under DDP: every rank fixes the weights of the global batch ---------------------------


def _ddp_rank(rank: int, world: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        weighting = create_weighting("static", TASKS, first_steps=2)
        # each rank's losses are its share of the global batch times world_size (steps.task_losses):
        # rank 0 saw a quarter of the global loss, rank 1 three quarters; their mean is the global loss.
        share = (0.25, 0.75)[rank] * world
        for step, (losses, present) in enumerate(
            [([2.0, 10.0, 0.0], [True, True, False]), ([4.0, 20.0, 3.0], [True, True, True])]
        ):
            weighting.combine(torch.tensor(losses) * share, torch.tensor(present), step)
        torch.save({"weights": weighting.fixed_weights(), "sum": weighting.loss_sum.clone()}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_static_first_steps_under_ddp_fix_the_same_weights_on_every_rank(tmp_path):
    mp.spawn(_ddp_rank, args=(2, f"file://{tmp_path / 'store'}", str(tmp_path / "rank")), nprocs=2)
    results = [torch.load(tmp_path / f"rank.{r}") for r in range(2)]
    single = create_weighting("static", TASKS, first_steps=2)
    single.combine(torch.tensor([2.0, 10.0, 0.0]), torch.tensor([True, True, False]), 0)
    single.combine(torch.tensor([4.0, 20.0, 3.0]), torch.tensor([True, True, True]), 1)
    for result in results:
        torch.testing.assert_close(result["sum"], torch.tensor([6.0, 30.0, 3.0]))
        torch.testing.assert_close(result["weights"], single.fixed_weights())
