"""``mtl-train search --engine ray``: a generation's trials trained in parallel as Ray tasks.

One local Ray instance of 2 CPUs per test module (per xdist worker), as in test_ingest_ray.py:
the search finds it started and leaves it running.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import ray
from test_train_search import SEARCH, genome_of, rows_of, search_cli

from mtl_data.train.search import Outcome
from mtl_data.train.search_ray import RayEngine

# population 2, two children per generation: generation 1 is trials 2 and 3, trained together
RAY_SEARCH = [*SEARCH, "--offspring", "2", "--engine", "ray"]


@pytest.fixture(scope="module", autouse=True)
def ray_instance():
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must fit in 107 bytes
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False, _temp_dir=temp)
    yield
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_search(synth_shards, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ray_search") / "s"
    code, stdout, err = search_cli("--shards", synth_shards, "--out", out, "--trials", "4", *RAY_SEARCH)
    assert code == 0, err
    assert [ln[:9] for ln in stdout.splitlines()[:4]] == [f"trial {i:03d}" for i in range(4)]
    assert ray.is_initialized()  # found running: left running
    return out


def test_a_generation_trains_in_parallel_each_trial_from_the_best_before_it(ray_search, synth_shards, tmp_path):
    rows = rows_of(ray_search)
    assert [r["generation"] for r in rows] == ["0", "0", "1", "1"]
    assert all(r["error"] == "" and float(r["fitness"]) > 0 for r in rows), rows
    best01 = max((0, 1), key=lambda i: (float(rows[i]["fitness"]), -i))
    # both children continue from the best trial before their generation, not from each other
    assert [r["transfer_from"] for r in rows] == ["", "", str(best01), str(best01)]
    assert len({genome_of(r) for r in rows}) == 4
    assert all((ray_search / "trials" / f"{i:03d}" / "checkpoints" / "last.pt").is_file() for i in range(4))
    # the engines plan the same genomes; in this process trial 1 already continues from trial 0
    local = rows_of_local(synth_shards, tmp_path / "local", 2)
    assert local[0] == rows[0]  # trained from scratch under either engine: the same run
    assert genome_of(local[1]) == genome_of(rows[1]) and local[1]["transfer_from"] == "0"


def rows_of_local(synth_shards, out: Path, trials: int) -> list[dict]:
    code, _, err = search_cli("--shards", synth_shards, "--out", out, "--trials", trials, *SEARCH, "--offspring", "2")
    assert code == 0, err
    return rows_of(out)


def test_a_resumed_ray_search_writes_the_csv_of_an_uninterrupted_one(ray_search, synth_shards, tmp_path):
    out = tmp_path / "s"
    code, _, err = search_cli("--shards", synth_shards, "--out", out, "--trials", "3", *RAY_SEARCH)
    assert code == 0, err  # cut inside generation 1: trial 3 is not trained
    code, stdout, err = search_cli("--out", out, "--resume", "--trials", "4", "--engine", "ray")
    assert code == 0, err
    assert stdout.startswith("trial 003 (generation 1")
    assert (out / "trials.csv").read_text().replace(str(out), "S") == (ray_search / "trials.csv").read_text().replace(
        str(ray_search), "S"
    )


def test_a_trial_whose_worker_died_is_a_failed_trial_and_a_bug_stops_the_search():
    # nested functions: Ray's workers cannot import this test module, cloudpickle sends them by value
    def _exit(code: int) -> None:
        os._exit(code)

    def _to_int(text: str) -> int:
        return int(text)

    with RayEngine() as engine:
        assert engine.resources == {"num_cpus": 1, "num_gpus": 0}  # no GPU in this instance
        died = ray.remote(max_retries=0)(_exit).remote(1)
        outcome = engine._outcome(died)
        assert outcome.metrics is None and outcome.error.startswith("WorkerCrashedError")
        bug = ray.remote(_to_int).remote("not a number")
        with pytest.raises(ValueError, match="invalid literal"):
            engine._outcome(bug)
        assert engine._outcome(ray.put(Outcome({"seg": {"miou": 0.5}}))).metrics == {"seg": {"miou": 0.5}}
    assert ray.is_initialized()


def test_ray_missing_is_one_line_before_anything_is_written(synth_shards, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    code, _, err = search_cli("--shards", synth_shards, "--out", tmp_path / "s", "--trials", "2", *RAY_SEARCH)
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert code == 1 and len(lines) == 1 and "Traceback" not in err
    assert "--engine ray needs Ray" in lines[0] and "pip install 'mtl-data[ray]'" in lines[0]
    assert not (tmp_path / "s").exists()


def test_ray_options_without_engine_ray_are_refused(synth_shards, tmp_path):
    code, _, err = search_cli(
        "--shards", synth_shards, "--out", tmp_path / "s", "--trials", "2", *SEARCH, "--gpus-per-trial", "1"
    )
    assert code == 2 and "--gpus-per-trial is an option of --engine ray" in err
    assert not (tmp_path / "s").exists()
