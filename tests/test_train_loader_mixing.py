"""Parsing the loader's ``mix`` (``mtl_data.train.data.mixing``): ratios, proportional, a stats report."""

from __future__ import annotations

import json
import logging

import pytest

from mtl_data.errors import MtlDataError
from mtl_data.train.data.mixing import resolve_mix

COUNTS = {"a2d2": 300, "gtsrb": 100, "kitti": 600}


def test_ratios_are_normalized_and_zero_ratios_left_out():
    assert resolve_mix({"kitti": 3, "a2d2": 1, "gtsrb": 0}, COUNTS) == {"a2d2": 0.25, "kitti": 0.75}


@pytest.mark.parametrize("mix", [None, "proportional"])
def test_proportional_is_by_sample_count(mix):
    assert resolve_mix(mix, {**COUNTS, "tusimple": 0}) == pytest.approx({"a2d2": 0.3, "gtsrb": 0.1, "kitti": 0.6})


@pytest.mark.parametrize(
    "mix, says",
    [
        ({"kitty": 1.0}, "mix: unknown source(s) 'kitty'; the shards hold a2d2, gtsrb, kitti"),
        ({"kitti": -0.5, "a2d2": 1}, "mix: ratio of 'kitti' is negative (-0.5); ratios must be >= 0"),
        ({"kitti": 0, "a2d2": 0.0}, "mix: every ratio is 0; give at least one source a positive ratio"),
        ({"kitti": "0.3"}, "mix: ratio of 'kitti' must be a finite number, got '0.3'"),
        ({"kitti": float("nan")}, "mix: ratio of 'kitti' must be a finite number, got nan"),
        ({"kitti": True}, "mix: ratio of 'kitti' must be a finite number, got True"),
        (0.5, "mix must be 'proportional', a {source: ratio} mapping or 'STATS.json#ALPHA', got float"),
        ("uniform", "mix 'uniform': expected 'proportional', a {source: ratio} mapping or 'STATS.json#ALPHA'"),
    ],
)
def test_bad_mixes_are_one_clear_error(mix, says):
    with pytest.raises(MtlDataError) as info:
        resolve_mix(mix, COUNTS)
    assert str(info.value) == says or str(info.value).startswith(says)


def test_a_source_without_loadable_samples_is_left_out_with_a_note(caplog):
    with caplog.at_level(logging.WARNING, logger="mtl_data.train.data.mixing"):
        assert resolve_mix({"kitti": 1, "gtsrb": 1}, {**COUNTS, "gtsrb": 0}) == {"kitti": 1.0}
    assert "source gtsrb is left out: it has no sample to load" in caplog.text
    with pytest.raises(MtlDataError, match="no sampled source has a sample in the split"):
        resolve_mix({"gtsrb": 1}, {**COUNTS, "gtsrb": 0})
    with pytest.raises(MtlDataError, match="proportional mix: no source has a sample"):
        resolve_mix("proportional", dict.fromkeys(COUNTS, 0))


@pytest.fixture
def report(tmp_path):
    """A stats report with the ``recommendations.mix`` table the stats command writes."""
    path = tmp_path / "stats.json"
    path.write_text(
        json.dumps(
            {
                "version": 1,
                "recommendations": {
                    "mix": {
                        "0.0": {"a2d2": 0.333333, "gtsrb": 0.333333, "kitti": 0.333333},
                        "0.5": {"a2d2": 0.3, "gtsrb": 0.2, "kitti": 0.5},
                        "1.0": {"a2d2": 0.3, "gtsrb": 0.1, "kitti": 0.6},
                    }
                },
            }
        )
    )
    return path


@pytest.mark.parametrize("alpha", ["0.5", "0.50", ".5"])
def test_a_stats_report_recommendation_is_read_by_its_alpha(report, alpha):
    assert resolve_mix(f"{report}#{alpha}", COUNTS) == pytest.approx({"a2d2": 0.3, "gtsrb": 0.2, "kitti": 0.5})


def test_a_missing_alpha_lists_the_available_ones(report):
    with pytest.raises(MtlDataError) as info:
        resolve_mix(f"{report}#0.7", COUNTS)
    assert str(info.value) == f"{report}: no mix for alpha '0.7'; available: 0.0, 0.5, 1.0"


def test_a_report_without_a_mix_table_or_unreadable_is_named(tmp_path):
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps({"version": 1}))
    with pytest.raises(MtlDataError, match=r"bare.json: no recommendations.mix table \(write it with"):
        resolve_mix(f"{bare}#0.5", COUNTS)
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(MtlDataError, match=r"broken.json: not a JSON stats report"):
        resolve_mix(f"{broken}#0.5", COUNTS)
    with pytest.raises(MtlDataError, match=r"missing.json: cannot read the stats report"):
        resolve_mix(f"{tmp_path / 'missing.json'}#0.5", COUNTS)


def test_a_report_recommending_an_unknown_source_is_refused(tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"recommendations": {"mix": {"1.0": {"bdd100k": 1.0}}}}))
    with pytest.raises(MtlDataError, match=r"mix '.*other.json#1.0': unknown source\(s\) 'bdd100k'"):
        resolve_mix(f"{path}#1.0", COUNTS)
