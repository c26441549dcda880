"""``mtl-train search``: the evolutionary search of task weights and asynchronous frequencies
(Leang et al. 2020, IV-C/D): its operators and fitness on hand values, a search with a stand-in
engine (failures, generations, resume), and a real 3-trial search end to end on CPU."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import SMALL_RUN

from mtl_data.cli.mtl_train import main as mtl_train
from mtl_data.errors import MtlDataError
from mtl_data.train.config import TrainConfig, load_config, resolve
from mtl_data.train.search import (
    Genome,
    Outcome,
    SearchSpace,
    Settings,
    Tabu,
    TrialRecord,
    TrialSpec,
    best_of,
    elite,
    fitness,
    mutate,
    plan_generation,
    recombine,
    search,
)

SEARCH = [
    "--tasks",
    "seg,depth",
    "--steps-per-trial",
    "2",
    "--population",
    "2",
    "--offspring",
    "1",
    "--device",
    "cpu",
    *SMALL_RUN,
]


def rows_of(out: Path) -> list[dict]:
    with (out / "trials.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def genome_of(row: dict) -> tuple:
    return tuple(row[f"{k}/{t}"] for k in ("exponent", "frequency") for t in ("seg", "depth"))


def record(trial: int, value: float, genome: Genome | None = None) -> TrialRecord:
    genome = genome or Genome((trial / 100, 0.0), (1, 1))
    return TrialRecord(TrialSpec(trial, 0, (), genome), None, {}, value)


# ---- the genome ---------------------------------------------------------------------------------


def test_weights_are_ten_to_the_exponents_normalised_to_sum_one():
    assert Genome((0.0, 1.0), (1, 1)).weights() == pytest.approx((1 / 11, 10 / 11), rel=1e-12)
    assert Genome((-2.0, 2.0, 0.0), (1, 1, 1)).weights() == pytest.approx(
        (0.01 / 101.01, 100 / 101.01, 1 / 101.01), rel=1e-12
    )
    assert math.fsum(Genome((1.37, -0.42), (3, 7)).weights()) == pytest.approx(1.0, abs=1e-15)


def test_the_tabu_list_compares_normalised_weights_and_frequencies():
    tabu = Tabu([Genome((0.0, 1.0), (1, 2))])
    assert Genome((0.5, 1.5), (1, 2)) in tabu  # the same normalised weights
    assert Genome((-1.25, -0.25), (1, 2)) in tabu
    assert Genome((0.0, 1.01), (1, 2)) not in tabu  # one grid step (0.01 decades) apart
    assert Genome((0.0, 1.0), (2, 1)) not in tabu  # other frequencies
    assert Genome((0.5, 1.5), (1, 2)).key() == ((-100, 0), (1, 2))


def test_the_space_holds_the_papers_ranges_on_a_grid_of_hundredths_of_a_decade():
    # Leang et al. V-A: min_seg = min_det = 0.1, max_seg = 1000, max_det = 100
    space = SearchSpace.create(("seg", "det2d"), {"seg": (0.1, 1000), "*": (0.1, 100)}, 10)
    assert space.bounds == ((-100, 300), (-100, 200))
    assert space.genome([5.0, -0.123], [0.2, 11.6]) == Genome((3.0, -0.12), (1, 10))  # clipped, on the grid
    assert space.genome([0.125, 0.0], [2.5, 3.49]) == Genome((0.13, 0.0), (3, 3))  # rounded half up
    assert SearchSpace.create(("seg", "depth"), (0.15, 150), 10).bounds == ((-82, 217),) * 2  # inside the range
    for tasks, weight_range, message in [
        (("seg",), (0.1, 10), "at least two"),
        (("seg", "depth"), (0, 10), "0 < min"),
        (("seg", "depth"), (10, 1), "0 < min"),
        (("seg", "depth"), {"lane": (1, 2)}, "lane"),
    ]:
        with pytest.raises(MtlDataError, match=message):
            SearchSpace.create(tasks, weight_range, 10)


def test_initial_genomes_are_uniform_over_the_grid_and_the_frequencies():
    space = SearchSpace.create(("seg", "depth"), (0.01, 100), 10)
    rng = np.random.default_rng(0)
    genomes = [space.random(rng) for _ in range(4000)]
    exponents = np.array([g.exponents for g in genomes])  # (N, 2)
    frequencies = np.array([g.frequencies for g in genomes])  # (N, 2)
    assert exponents.min() >= -2 and exponents.max() <= 2 and abs(exponents.mean()) < 0.1
    assert set(frequencies.ravel().tolist()) == set(range(1, 11))


# ---- the operators ------------------------------------------------------------------------------


def test_recombination_steps_along_the_search_gradient_towards_the_better_parent():
    better, worse = Genome((0.0, 1.0), (1, 3)), Genome((1.0, 0.0), (5, 1))
    # two parents: utilities +1/2, -1/2; m + 1/2 sum u_k (x_k - m) = 3/4 better + 1/4 worse
    assert recombine([better, worse]) == (pytest.approx([0.25, 0.75]), pytest.approx([2.0, 2.5]))
    # three: utilities 1/2, 0, -1/2 -> coefficients 7/12, 4/12, 1/12
    three = [Genome((0.0, 0.0), (1, 1)), Genome((1.2, 0.0), (4, 1)), Genome((2.4, 0.0), (10, 1))]
    exponents, frequencies = recombine(three)
    assert exponents == pytest.approx([0.6, 0.0]) and frequencies == pytest.approx([2.75, 1.0])
    assert recombine([worse]) == ([1.0, 0.0], [5.0, 1.0])
    space = SearchSpace.create(("seg", "depth"), (0.01, 100), 10)
    child = mutate(space, *recombine([better, worse]), 0.0, np.random.default_rng(0))
    assert child == Genome((0.25, 0.75), (2, 3))  # no noise: the recombined mean on the grid


def test_mutation_is_gaussian_with_a_tenth_of_each_range():
    space = SearchSpace.create(("seg", "depth"), {"seg": (0.01, 100), "depth": (1, 10)}, 10)
    rng = np.random.default_rng(1)
    children = [mutate(space, [0.0, 0.5], [5.0, 5.0], 0.1, rng) for _ in range(3000)]
    seg = np.array([c.exponents[0] for c in children])
    depth = np.array([c.exponents[1] for c in children])
    nu = np.array([c.frequencies[0] for c in children])
    assert seg.std() == pytest.approx(0.4, rel=0.1) and depth.std() == pytest.approx(0.1, rel=0.1)
    assert nu.std() == pytest.approx(0.9, rel=0.15) and nu.mean() == pytest.approx(5.0, abs=0.1)


def test_a_tabu_child_is_drawn_again_and_an_exhausted_space_is_an_error():
    space = SearchSpace.create(("seg", "depth"), (1.0, 1.0), 2)  # one weight: 4 configurations
    settings = Settings(steps_per_trial=1, population=4, offspring=2, parents=2, max_frequency=2, mutation=0.1, seed=0)
    specs = plan_generation(space, settings, [], 0)
    assert sorted(s.genome.frequencies for s in specs) == [(1, 1), (1, 2), (2, 1), (2, 2)]
    with pytest.raises(MtlDataError, match="exhausted"):
        plan_generation(space, dataclasses.replace(settings, population=5), [], 0)
    history = [TrialRecord(s, None, {}, 0.1 * s.trial) for s in specs]
    with pytest.raises(MtlDataError, match="exhausted"):
        plan_generation(space, settings, history, 1)
    old, new = Genome((0.0, 0.0), (1, 1)), Genome((0.0, 0.0), (2, 1))
    draws = iter([((0, 1), old), ((0, 1), old), ((1, 0), new)])
    tabu = Tabu([old])
    assert tabu.draw(lambda: next(draws), space, np.random.default_rng(0)) == ((1, 0), new)
    assert new in tabu


def test_parents_come_from_the_best_successful_trials():
    records = [record(0, 0.2), record(1, math.nan), record(2, 0.5), record(3, 0.5), record(4, 0.1)]
    assert [r.trial for r in elite(records, 3)] == [2, 3, 0]  # a tie: the earlier trial first
    assert best_of(records).trial == 2 and best_of([record(0, math.nan)]) is None
    space = SearchSpace.create(("seg", "depth"), (0.01, 100), 10)
    settings = Settings(
        steps_per_trial=1, population=2, offspring=50, parents=2, max_frequency=10, mutation=0.1, seed=3
    )
    children = plan_generation(space, settings, records, 1)
    assert [c.trial for c in children] == list(range(2, 52)) and {c.parents for c in children} == {(2, 3)}


# ---- fitness ------------------------------------------------------------------------------------


def test_fitness_is_the_geometric_mean_with_lower_is_better_as_a_ratio_to_the_reference():
    higher = {"seg": True, "depth": False, "det2d": True}
    assert fitness({"seg": 0.5, "det2d": 0.8}, higher, {}) == pytest.approx(math.sqrt(0.4))
    assert fitness({"seg": 0.5, "depth": 0.2}, higher, {"depth": 0.4}) == pytest.approx(1.0)  # sqrt(0.5 * 0.4/0.2)
    assert fitness({"seg": 0.5, "depth": 0.4}, higher, {"depth": 0.4}) == pytest.approx(math.sqrt(0.5))
    assert fitness({"seg": 0.0, "depth": 0.4}, higher, {"depth": 0.4}) == 0.0
    # the reference scales every trial alike: which trial is better does not depend on it
    a, b = {"seg": 0.5, "depth": 0.3}, {"seg": 0.45, "depth": 0.25}
    for ref in (0.01, 1.0, 100.0):
        assert fitness(b, higher, {"depth": ref}) / fitness(a, higher, {"depth": ref}) == pytest.approx(
            math.sqrt(0.45 / 0.5 * 0.3 / 0.25)
        )
    for values, message in [
        ({"seg": math.nan, "depth": 0.2}, "undefined"),
        ({"seg": -0.1, "depth": 0.2}, "< 0"),
        ({"seg": 0.5, "depth": 0.0}, "> 0"),
    ]:
        with pytest.raises(MtlDataError, match=message):
            fitness(values, higher, {"depth": 0.4})


# ---- a search with a stand-in engine ------------------------------------------------------------


def stand_in(fail: set[int]):
    """An engine that 'trains' by formula: seg mIoU and depth abs_rel from the genome."""

    def engine(specs, state):
        for spec in specs:
            source = state.transfer_source()
            config = state.trial_config(spec, source)
            assert config.steps == 1 and config.weighting.name == "async"
            if spec.trial in fail:
                outcome = Outcome(None, "NonFiniteLoss: the seg loss is not finite at step 1")
            else:
                (e_seg, e_depth), (nu_seg, nu_depth) = spec.genome.exponents, spec.genome.frequencies
                outcome = Outcome(
                    {
                        "seg": {"miou": 1 / (1 + abs(e_seg - e_depth - 1) + 0.1 * nu_seg), "pixel_acc": 0.9},
                        "depth": {"abs_rel": 0.2 + 0.05 * nu_depth},
                    }
                )
            state.record(spec, source, outcome)

    return engine


@pytest.fixture
def base(synth_shards) -> TrainConfig:
    return resolve(None, {"shards": synth_shards, "tasks": ("seg", "depth")})


def test_a_search_records_failures_and_continues_and_a_resume_writes_the_same_file(base, tmp_path):
    kwargs = {"steps_per_trial": 1, "population": 4, "offspring": 3, "parents": 2, "seed": 7}
    straight = search(base, tmp_path / "straight", trials=14, engine=stand_in({1, 5}), **kwargs)
    rows = rows_of(tmp_path / "straight")
    assert [int(r["generation"]) for r in rows] == [0] * 4 + [1] * 3 + [2] * 3 + [3] * 3 + [4]
    assert math.isnan(float(rows[1]["fitness"])) and rows[1]["error"].startswith("NonFiniteLoss")
    assert rows[1]["seg/miou"] == "nan" and rows[0]["error"] == ""
    ok = [r for r in straight.records if r.ok]
    assert len(ok) == 12 and straight.best == max(ok, key=lambda r: r.fitness)
    for r in straight.records:
        before = straight.records[: r.trial]
        expected = best_of(before)
        assert r.transfer_from == (None if expected is None else expected.trial)  # the best so far
        assert 1 not in r.spec.parents and 5 not in r.spec.parents and r.transfer_from not in (1, 5)
        if r.spec.generation:
            best = {e.trial for e in elite(straight.records[: 4 + 3 * (r.spec.generation - 1)], 4)}
            assert len(r.spec.parents) == 2 and set(r.spec.parents) <= best
    assert len({r.spec.genome.key() for r in straight.records}) == 14
    # trial 0's depth abs_rel is the reference: its ratio is 1
    first = straight.records[0]
    assert first.fitness == pytest.approx(math.sqrt(first.metrics["seg/miou"]))

    # interrupted after 5 trials (inside generation 1), with trial 5's folder half written
    cut = tmp_path / "cut"
    search(base, cut, trials=5, engine=stand_in({1, 5}), **kwargs)
    assert rows_of(cut) == rows[:5]
    (cut / "trials" / "005" / "checkpoints").mkdir(parents=True)
    resumed = search(base, cut, trials=14, resume=True, engine=stand_in({1, 5}), **kwargs)
    assert not (cut / "trials" / "005").exists()  # the stand-in trains nothing: the stale folder was removed
    assert (cut / "trials.csv").read_text() == (tmp_path / "straight" / "trials.csv").read_text()
    assert [r.spec for r in resumed.records] == [r.spec for r in straight.records]
    assert (cut / "best.toml").read_text().replace(str(cut), "S") == (
        tmp_path / "straight" / "best.toml"
    ).read_text().replace(str(tmp_path / "straight"), "S")


def test_without_any_success_children_are_random_and_there_is_no_best(base, tmp_path):
    result = search(
        base, tmp_path / "s", trials=4, steps_per_trial=1, population=2, offspring=2, engine=stand_in({0, 1, 2, 3})
    )
    assert result.best is None and not (tmp_path / "s" / "best.toml").exists()
    assert [r.spec.parents for r in result.records] == [()] * 4 and [r.transfer_from for r in result.records] == [
        None
    ] * 4


def test_a_search_refuses_a_taken_folder_a_changed_resume_and_a_weighting_of_its_own(base, tmp_path):
    out = tmp_path / "s"
    search(base, out, trials=2, steps_per_trial=1, population=2, engine=stand_in(set()))
    with pytest.raises(MtlDataError, match="holds a search"):
        search(base, out, trials=2, steps_per_trial=1, population=2, engine=stand_in(set()))
    with pytest.raises(MtlDataError, match="differ.*population"):
        search(base, out, trials=3, steps_per_trial=1, population=3, resume=True, engine=stand_in(set()))
    with pytest.raises(MtlDataError, match="differ.*optim.lr"):
        search(
            dataclasses.replace(base, optim=dataclasses.replace(base.optim, lr=0.5)),
            out,
            trials=3,
            steps_per_trial=1,
            population=2,
            resume=True,
            engine=stand_in(set()),
        )
    with pytest.raises(MtlDataError, match="leave weighting"):
        search(
            dataclasses.replace(base, weighting=dataclasses.replace(base.weighting, name="dwa")),
            tmp_path / "w",
            trials=2,
            steps_per_trial=1,
            engine=stand_in(set()),
        )
    with pytest.raises(MtlDataError, match="no search to resume"):
        search(base, tmp_path / "none", trials=2, steps_per_trial=1, resume=True, engine=stand_in(set()))
    with pytest.raises(MtlDataError, match="evaluation split 'test' labels seg"):
        search(
            dataclasses.replace(base, eval=dataclasses.replace(base.eval, split="test")),
            tmp_path / "t",
            trials=2,
            steps_per_trial=1,
            engine=stand_in(set()),
        )


# ---- a real search end to end --------------------------------------------------------------------


@pytest.fixture(scope="module")
def straight_search(synth_shards, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("search") / "s"
    code, stdout, err = search_cli("--shards", synth_shards, "--out", out, "--trials", "3", *SEARCH)
    assert code == 0, err
    return out, stdout


def search_cli(*args) -> tuple[int, str, str]:
    """``mtl-train search ARGS`` in-process (module fixtures have no capsys): exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            mtl_train(["search", *(str(a) for a in args)])
            code = 0
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def test_a_three_trial_search_trains_each_trial_from_the_best_so_far(straight_search):
    out, stdout = straight_search
    rows = rows_of(out)
    assert [r["trial"] for r in rows] == ["0", "1", "2"] and [r["generation"] for r in rows] == ["0", "0", "1"]
    lines = stdout.splitlines()
    assert len(lines) == 4 and all(ln.startswith(f"trial {i:03d}") for i, ln in enumerate(lines[:3]))
    fitness_values = [float(r["fitness"]) for r in rows]
    assert all(math.isfinite(f) and f > 0 for f in fitness_values), rows
    for r in rows:
        assert float(r["weight/seg"]) + float(r["weight/depth"]) == pytest.approx(1.0, abs=1e-12)
        assert all(1 <= int(r[f"frequency/{t}"]) <= 10 for t in ("seg", "depth"))
        assert all(-2 <= float(r[f"exponent/{t}"]) <= 2 for t in ("seg", "depth"))
        assert math.isfinite(float(r["seg/miou"])) and float(r["depth/abs_rel"]) > 0
    assert len({genome_of(r) for r in rows}) == 3
    assert rows[2]["parents"] in ("0;1", "1;0")
    # dynamic weight transfer: each trial's config starts from the best trial's last.pt so far
    configs = [load_config(out / "trials" / f"{i:03d}" / "config.toml") for i in range(3)]
    best01 = 0 if fitness_values[0] >= fitness_values[1] else 1
    assert configs[0].init_from is None
    assert Path(configs[1].init_from) == out / "trials" / "000" / "checkpoints" / "last.pt"
    assert Path(configs[2].init_from) == out / "trials" / f"{best01:03d}" / "checkpoints" / "last.pt"
    assert [r["transfer_from"] for r in rows] == ["", "0", str(best01)]
    assert all((out / "trials" / f"{i:03d}" / "checkpoints" / "last.pt").is_file() for i in range(3))
    for config, r in zip(configs, rows):
        assert config.steps == 2 and config.weighting.name == "async"
        assert config.weighting.options == {
            "weights": {"seg": float(r["weight/seg"]), "depth": float(r["weight/depth"])},
            "frequencies": {"seg": int(r["frequency/seg"]), "depth": int(r["frequency/depth"])},
        }
    # best.toml: the best row's whole config
    best = max(range(3), key=lambda i: (fitness_values[i], -i))
    assert lines[3].startswith(f"best: trial {best:03d}")
    assert load_config(out / "best.toml") == configs[best]


def test_a_resumed_search_writes_the_csv_of_an_uninterrupted_one(straight_search, synth_shards, tmp_path):
    out = tmp_path / "s"
    code, _, err = search_cli("--shards", synth_shards, "--out", out, "--trials", "2", *SEARCH)
    assert code == 0, err
    code, stdout, err = search_cli("--out", out, "--resume", "--trials", "3")  # the rest from search.json
    assert code == 0, err
    assert stdout.startswith("trial 002 (generation 1, parents ")
    straight = rows_of(straight_search[0])
    resumed = rows_of(out)
    assert [genome_of(r) for r in resumed] == [genome_of(r) for r in straight]
    assert [r["parents"] for r in resumed] == [r["parents"] for r in straight]
    # training on CPU is deterministic: the whole file is the same
    assert (out / "trials.csv").read_text() == (straight_search[0] / "trials.csv").read_text()


def test_the_command_refuses_a_resume_with_other_settings(straight_search, tmp_path):
    copy = tmp_path / "s"
    shutil.copytree(straight_search[0], copy, ignore=shutil.ignore_patterns("trials"))
    code, _, err = search_cli("--out", copy, "--resume", "--trials", "4", "--max-frequency", "5")
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert code == 1 and len(lines) == 1 and "max_frequency" in lines[0] and "Traceback" not in err
    code, _, err = search_cli("--out", tmp_path / "new", "--trials", "2", "--tasks", "seg,depth")
    assert code != 0 and "--shards" in err
