"""A2D2 bus signals: both file formats, signed steering interpolation, gaps, and bad files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mtl_data.errors import InputError
from mtl_data.ingest.a2d2_bus import BusSignals, Signal, read_bus_file, steering_at

# A realistic absolute time (2018-08-10, Unix µs): large enough that float offsets would round.
T0 = 1_533_904_617_000_000
MS = 1000


def write_fusion(tmp_path: Path, signals: dict[str, list], name: str = "bus_signals.json") -> Path:
    """A sensor-fusion bus file: ``{signal: [[t_us, v], ...]}`` -> the native JSON object."""
    path = tmp_path / name
    doc = {sig: {"unit": None, "values": samples} for sig, samples in signals.items()}
    path.write_text(json.dumps(doc, indent=1))
    return path


def steering_signals(times: list[int], magnitudes: list[float], signs: list[int]) -> dict[str, list]:
    return {
        "steering_angle_calculated": [[t, m] for t, m in zip(times, magnitudes)],
        "steering_angle_calculated_sign": [[t, s] for t, s in zip(times, signs)],
    }


# ---- format (a): sensor fusion


def test_ramp_interpolates_to_the_analytic_angle_gap_and_speed(tmp_path):
    # magnitude 0 -> 100 deg over 1 s, sampled every 10 ms, left (sign 0)
    times = [T0 + k * 10 * MS for k in range(101)]
    signals = steering_signals(times, [float(k) for k in range(101)], [0] * 101)
    # speed 50 -> 60 km/h over 1 s, sampled every 20 ms (its own clock)
    speed_times = [T0 + k * 20 * MS for k in range(51)]
    signals["vehicle_speed"] = [[t, 50.0 + 10.0 * (t - T0) / 1e6] for t in speed_times]
    signals["brake_pressure"] = [[T0, 0.0]]  # unknown to steering_at: ignored
    bus = read_bus_file(write_fusion(tmp_path, signals))

    t = T0 + 123_456
    steer = steering_at(bus, t)
    assert steer is not None
    assert steer.angle_deg == pytest.approx(100.0 * 0.123456, abs=1e-9)
    # bracket 120 ms .. 130 ms: the farther sample is 6.544 ms away
    assert steer.gap_ms == pytest.approx(6.544, abs=1e-12)
    assert steer.speed_kmh == pytest.approx(50.0 + 10.0 * 0.123456, abs=1e-9)
    assert all(type(x) is float for x in (steer.angle_deg, steer.speed_kmh, steer.gap_ms))


def test_exact_sample_time_has_zero_gap(tmp_path):
    times = [T0 + k * 10 * MS for k in range(11)]
    magnitudes = [2.0 * k for k in range(11)]
    bus = read_bus_file(write_fusion(tmp_path, steering_signals(times, magnitudes, [0] * 11)))
    steer = steering_at(bus, T0 + 30 * MS)
    assert steer is not None
    assert steer.angle_deg == 6.0
    assert steer.gap_ms == 0.0
    assert steer.speed_kmh is None  # no vehicle_speed in the file


def test_sign_one_gives_negative_angles(tmp_path):
    times = [T0, T0 + 10 * MS]
    bus = read_bus_file(write_fusion(tmp_path, steering_signals(times, [30.0, 40.0], [1, 1])))
    assert steering_at(bus, T0).angle_deg == -30.0
    assert steering_at(bus, T0 + 5 * MS).angle_deg == pytest.approx(-35.0, abs=1e-12)


@pytest.mark.parametrize("sign_at_zero", [0, 1])
def test_zero_crossing_left_to_right_passes_through_zero(tmp_path, sign_at_zero):
    # left 5 -> 0 -> right 5; the sign flips at the centred sample (either value there is 0 deg)
    times = [T0 + k * 10 * MS for k in range(5)]
    bus = read_bus_file(
        write_fusion(tmp_path, steering_signals(times, [5.0, 2.5, 0.0, 2.5, 5.0], [0, 0, sign_at_zero, 1, 1]))
    )
    assert steering_at(bus, T0 + 15 * MS).angle_deg == pytest.approx(1.25, abs=1e-12)
    assert steering_at(bus, T0 + 20 * MS).angle_deg == 0.0
    assert steering_at(bus, T0 + 25 * MS).angle_deg == pytest.approx(-1.25, abs=1e-12)
    assert steering_at(bus, T0 + 40 * MS).angle_deg == -5.0


def test_crossing_between_samples_interpolates_the_signed_series(tmp_path):
    # left 1 at 10 ms, right 1 at 20 ms: the wheel passes 0 at 15 ms. Interpolating the
    # magnitude and signing afterwards would wrongly give +-1 there.
    times = [T0 + k * 10 * MS for k in range(4)]
    bus = read_bus_file(write_fusion(tmp_path, steering_signals(times, [3.0, 1.0, 1.0, 3.0], [0, 0, 1, 1])))
    assert steering_at(bus, T0 + 15 * MS).angle_deg == pytest.approx(0.0, abs=1e-12)
    assert steering_at(bus, T0 + 12_500).angle_deg == pytest.approx(0.5, abs=1e-12)
    assert steering_at(bus, T0 + 17_500).angle_deg == pytest.approx(-0.5, abs=1e-12)


def test_sign_series_on_other_timestamps_uses_the_nearest_sign_sample(tmp_path):
    times = [T0 + k * 10 * MS for k in range(11)]
    signals = {
        "steering_angle_calculated": [[t, 10.0] for t in times],
        # left from 3 ms, right from 47 ms: magnitude samples up to 20 ms are nearer to 3 ms
        # (20 ms: 17 vs 27 away), those from 30 ms on nearer to 47 ms (30 ms: 27 vs 17 away)
        "steering_angle_calculated_sign": [[T0 + 3 * MS, 0], [T0 + 47 * MS, 1]],
    }
    bus = read_bus_file(write_fusion(tmp_path, signals))
    assert steering_at(bus, T0 + 20 * MS).angle_deg == 10.0
    assert steering_at(bus, T0 + 30 * MS).angle_deg == -10.0
    assert steering_at(bus, T0 + 25 * MS).angle_deg == pytest.approx(0.0, abs=1e-12)
    assert steering_at(bus, T0 + 100 * MS).angle_deg == -10.0  # after the last sign sample


def test_equidistant_sign_samples_take_the_earlier(tmp_path):
    signals = {
        "steering_angle_calculated": [[T0 + 10 * MS, 7.0]],
        "steering_angle_calculated_sign": [[T0, 1], [T0 + 20 * MS, 0]],
    }
    bus = read_bus_file(write_fusion(tmp_path, signals))
    assert steering_at(bus, T0 + 10 * MS).angle_deg == -7.0


# ---- ends of the series, holes, absent signals


@pytest.fixture
def short_bus(tmp_path) -> BusSignals:
    """Angle 10 deg left at T0 .. T0+100 ms every 10 ms, then a 300 ms hole, then 20 deg."""
    times = [T0 + k * 10 * MS for k in range(11)] + [T0 + 400 * MS + k * 10 * MS for k in range(11)]
    magnitudes = [10.0] * 11 + [20.0] * 11
    return read_bus_file(write_fusion(tmp_path, steering_signals(times, magnitudes, [0] * 22)))


def test_before_first_sample_within_max_gap_uses_it(short_bus):
    steer = steering_at(short_bus, T0 - 40 * MS)
    assert (steer.angle_deg, steer.gap_ms) == (10.0, 40.0)


def test_after_last_sample_within_max_gap_uses_it(short_bus):
    steer = steering_at(short_bus, T0 + 500 * MS + 60 * MS)
    assert (steer.angle_deg, steer.gap_ms) == (20.0, 60.0)


def test_beyond_max_gap_outside_the_series_is_none(short_bus):
    assert steering_at(short_bus, T0 - 150 * MS) is None
    assert steering_at(short_bus, T0 + 500 * MS + 101 * MS) is None
    assert steering_at(short_bus, T0 - 150 * MS, max_gap_ms=200.0).gap_ms == 150.0


def test_time_inside_a_300ms_hole_is_none(short_bus):
    assert steering_at(short_bus, T0 + 250 * MS, max_gap_ms=100.0) is None
    # near the hole's edge the farther bracketing sample is still 290 ms away
    assert steering_at(short_bus, T0 + 110 * MS, max_gap_ms=100.0) is None
    steer = steering_at(short_bus, T0 + 250 * MS, max_gap_ms=200.0)
    assert steer.gap_ms == 150.0
    assert steer.angle_deg == pytest.approx(15.0, abs=1e-12)


def test_gap_equal_to_max_gap_is_accepted(short_bus):
    assert steering_at(short_bus, T0 - 100 * MS, max_gap_ms=100.0).gap_ms == 100.0


def test_steering_signals_absent_gives_none(tmp_path):
    bus = read_bus_file(write_fusion(tmp_path, {"vehicle_speed": [[T0, 30.0]]}))
    assert steering_at(bus, T0) is None


def test_sign_signal_absent_gives_none(tmp_path):
    bus = read_bus_file(write_fusion(tmp_path, {"steering_angle_calculated": [[T0, 30.0]]}))
    assert steering_at(bus, T0) is None


def test_empty_steering_series_gives_none(tmp_path):
    bus = read_bus_file(write_fusion(tmp_path, steering_signals([], [], [])))
    assert bus.signals["steering_angle_calculated"].t_us.shape == (0,)
    assert steering_at(bus, T0) is None


def test_speed_far_from_the_image_time_is_none_but_angle_kept(tmp_path):
    signals = steering_signals([T0, T0 + 10 * MS], [1.0, 1.0], [0, 0])
    signals["vehicle_speed"] = [[T0 - 500 * MS, 42.0]]
    steer = steering_at(read_bus_file(write_fusion(tmp_path, signals)), T0 + 5 * MS)
    assert steer.angle_deg == 1.0
    assert steer.speed_kmh is None


@pytest.mark.parametrize("code", [614.10, 614.25])
def test_init_and_error_codes_of_the_angle_give_none(tmp_path, code):
    bus = read_bus_file(write_fusion(tmp_path, steering_signals([T0, T0 + 10 * MS], [12.0, code], [0, 0])))
    assert steering_at(bus, T0 + 5 * MS) is None
    assert steering_at(bus, T0 - 1 * MS).angle_deg == 12.0  # the valid sample alone is fine


def test_read_gives_int64_times_and_float64_values(tmp_path):
    path = write_fusion(tmp_path, steering_signals([T0, T0 + 1], [1, 2.5], [0, 1]))
    sig = read_bus_file(path).signals["steering_angle_calculated"]
    assert sig.t_us.dtype == np.int64 and sig.values.dtype == np.float64
    assert sig.t_us.tolist() == [T0, T0 + 1]
    assert sig.values.tolist() == [1.0, 2.5]


def test_large_file_matches_the_analytic_series(tmp_path):
    # ~100k samples per signal, the size of a real scene: the vectorised path must be exact
    n = 100_000
    times = T0 + np.arange(n, dtype=np.int64) * 10 * MS
    magnitudes = np.round(np.abs(np.sin(np.arange(n) / 500.0)) * 400.0 / 0.15) * 0.15
    signs = (np.sin(np.arange(n) / 500.0) < 0).astype(int)
    path = write_fusion(tmp_path, steering_signals(times.tolist(), magnitudes.tolist(), signs.tolist()))
    bus = read_bus_file(path)
    assert np.array_equal(bus.signals["steering_angle_calculated"].t_us, times)
    k = 77_777
    expected = (magnitudes[k] * (-1 if signs[k] else 1) + magnitudes[k + 1] * (-1 if signs[k + 1] else 1)) / 2
    assert steering_at(bus, int(times[k]) + 5 * MS).angle_deg == pytest.approx(expected, abs=1e-9)


def test_float_timestamps_above_2_53_are_kept_exact(tmp_path):
    # a float anywhere turns the fast path's array into float64; the timestamps must not round
    t = 2**53 + 1
    path = tmp_path / "bus.json"
    path.write_text(f'{{"x": {{"unit": null, "values": [[{t}, 1.5], [{t + 2}, 2]]}}}}')
    assert read_bus_file(path).signals["x"].t_us.tolist() == [t, t + 2]


# ---- format (b): semantic subset


def frame_entry(
    t: int, magnitude_window: list[float], sign_window: list[int], speed_window: list[float], frame_id: int
) -> dict:
    return {
        "frame_name": f"20180807145028_camera_frontcenter_{frame_id:09d}.json",
        "timestamp": t,
        "flexray": {
            "steering_angle_calculated": {"unit": "Unit_DegreOfArc", "values": magnitude_window},
            "steering_angle_calculated_sign": {"unit": None, "values": sign_window},
            "vehicle_speed": {"unit": "Unit_KiloMeterPerHour", "values": speed_window},
            "gear": {"unit": None, "values": [11]},
        },
    }


def test_semantic_subset_unsorted_entries_give_window_means_at_frame_times(tmp_path):
    entries = [
        frame_entry(T0 + 200 * MS, [30.0, 31.5, 33.0], [1, 1, 1], [20.0, 22.0], 3),
        frame_entry(T0, [10.0, 10.15, 10.3], [0, 0, 0], [18.0], 1),
        frame_entry(T0 + 100 * MS, [20.0, 21.0], [0, 0], [19.0, 19.5, 20.0], 2),
    ]
    path = tmp_path / "20180807145028_bus_signals.json"
    path.write_text(json.dumps(entries))
    bus = read_bus_file(path)
    assert bus.signals["steering_angle_calculated"].t_us.tolist() == [T0, T0 + 100 * MS, T0 + 200 * MS]
    assert bus.signals["gear"].values.tolist() == [11.0, 11.0, 11.0]

    steer = steering_at(bus, T0 + 100 * MS)
    assert steer.angle_deg == pytest.approx(20.5, abs=1e-12)
    assert steer.speed_kmh == pytest.approx(19.5, abs=1e-12)
    assert steer.gap_ms == 0.0
    assert steering_at(bus, T0 + 200 * MS).angle_deg == pytest.approx(-31.5, abs=1e-12)
    assert steering_at(bus, T0).angle_deg == pytest.approx(10.15, abs=1e-12)


def test_semantic_subset_empty_window_is_skipped(tmp_path):
    entries = [frame_entry(T0, [4.0], [0], [], 1), frame_entry(T0 + 40 * MS, [8.0], [0], [30.0], 2)]
    path = tmp_path / "bus.json"
    path.write_text(json.dumps(entries))
    bus = read_bus_file(path)
    assert bus.signals["vehicle_speed"].t_us.tolist() == [T0 + 40 * MS]
    steer = steering_at(bus, T0)
    assert steer.angle_deg == 4.0
    assert steer.speed_kmh == 30.0  # nearest speed sample, 40 ms away


def test_semantic_subset_equal_entry_timestamps_is_an_error(tmp_path):
    entries = [frame_entry(T0, [1.0], [0], [1.0], 1), frame_entry(T0, [2.0], [0], [1.0], 2)]
    path = tmp_path / "bus.json"
    path.write_text(json.dumps(entries))
    with pytest.raises(InputError, match=r"000000001.*000000002.*share timestamp") as info:
        read_bus_file(path)
    assert info.value.path == str(path)


def test_semantic_subset_non_number_in_window_is_an_error(tmp_path):
    path = tmp_path / "bus.json"
    path.write_text(json.dumps([frame_entry(T0, [1.0, "x"], [0], [1.0], 5)]))
    with pytest.raises(InputError, match=r"entry 0 .*000000005.*steering_angle_calculated.*value 1"):
        read_bus_file(path)


# ---- bad files


def test_not_json_names_the_file_and_the_line(tmp_path):
    path = tmp_path / "bus.json"
    path.write_text('{\n "vehicle_speed": {\n  "values": [[1, 2],\n  [3, 4\n }\n}\n')
    with pytest.raises(InputError) as info:
        read_bus_file(path)
    assert info.value.path == str(path)
    assert info.value.line == 5
    assert str(path) in str(info.value) and "line 5" in str(info.value)


def test_top_level_scalar_is_an_error(tmp_path):
    path = tmp_path / "bus.json"
    path.write_text("42")
    with pytest.raises(InputError, match="expected an object .* or an array"):
        read_bus_file(path)


def test_out_of_order_timestamps_name_the_signal_and_index(tmp_path):
    path = write_fusion(tmp_path, {"vehicle_speed": [[T0, 1.0], [T0 + 20, 2.0], [T0 + 10, 3.0]]})
    expected = rf"'vehicle_speed'.*out of order at sample 2: {T0 + 10} follows {T0 + 20}"
    with pytest.raises(InputError, match=expected):
        read_bus_file(path)


def test_repeated_timestamps_name_the_signal_and_samples(tmp_path):
    path = write_fusion(tmp_path, steering_signals([T0, T0 + 10, T0 + 10], [1.0, 2.0, 3.0], [0, 0, 0]))
    expected = rf"'steering_angle_calculated'.*{T0 + 10} repeated at samples 1 and 2"
    with pytest.raises(InputError, match=expected):
        read_bus_file(path)


@pytest.mark.parametrize(
    "bad_sample, expected",
    [
        ([T0 + 1], r"sample 1 is \[\d+\]; expected \[timestamp_us, value\]"),
        ([T0 + 1, 2.0, 3.0], r"sample 1 is .*expected \[timestamp_us, value\]"),
        ([T0 + 1, "2.0"], r"sample 1 has value \"2.0\"; expected a finite number"),
        ([T0 + 1, None], r"sample 1 has value null"),
        (["t", 2.0], r"sample 1 has timestamp \"t\"; expected an integer"),
        ([T0 + 0.5, 2.0], r"sample 1 has timestamp .*expected an integer"),
        (7, r"sample 1 is 7"),
    ],
)
def test_malformed_sample_is_an_error(tmp_path, bad_sample, expected):
    path = write_fusion(tmp_path, {"vehicle_speed": [[T0, 1.0], bad_sample, [T0 + 2, 1.0]]})
    with pytest.raises(InputError, match=r"'vehicle_speed': " + expected) as info:
        read_bus_file(path)
    assert info.value.path == str(path)


def test_nan_value_is_an_error(tmp_path):
    path = tmp_path / "bus.json"
    path.write_text('{"vehicle_speed": {"unit": null, "values": [[1, 2.0], [2, NaN]]}}')
    expected = r"'vehicle_speed': sample 1 has value nan; expected a finite number"
    with pytest.raises(InputError, match=expected):
        read_bus_file(path)


def test_float_timestamp_of_2_63_is_an_error_not_an_overflow(tmp_path):
    """9.223372036854776e18 is integral and finite but one past int64 (found by the property tests)."""
    path = write_fusion(tmp_path, {"vehicle_speed": [[float(2**63), 1.0], [T0 + 0.0, 2.0]]})
    with pytest.raises(InputError, match=r"'vehicle_speed': sample 0 has timestamp 9\.22.*e\+18; expected an integer"):
        read_bus_file(path)


def test_integer_value_too_large_for_a_double_is_an_error(tmp_path):
    """A JSON integer may have 400 digits; float() of it raises OverflowError, which must not escape."""
    path = tmp_path / "bus.json"
    path.write_text('{"vehicle_speed": {"unit": null, "values": [[1, 2.0], [2, 1' + "0" * 400 + "]]}}")
    with pytest.raises(InputError, match=r"'vehicle_speed': sample 1 has value 1000+\.\.\.; expected a finite number"):
        read_bus_file(path)


def test_semantic_subset_integer_too_large_for_a_double_is_an_error(tmp_path):
    path = tmp_path / "bus.json"
    entry = frame_entry(T0, [1.0], [0], [1.0], 5)
    entry["flexray"]["vehicle_speed"]["values"] = [10**400]
    path.write_text(json.dumps([entry]))
    with pytest.raises(InputError, match=r"'vehicle_speed': value 0 is 1000+\.\.\.; expected a finite number"):
        read_bus_file(path)


def test_semantic_subset_window_whose_sum_overflows_has_its_finite_mean(tmp_path):
    """Two values of 1e308 sum past the largest double (fsum raises); their mean is 1e308."""
    path = tmp_path / "bus.json"
    path.write_text(json.dumps([frame_entry(T0, [1.0], [0], [1e308, 1e308], 5)]))
    assert read_bus_file(path).signals["vehicle_speed"].values.tolist() == [1e308]


def test_integer_literal_beyond_the_digit_limit_is_not_valid_json(tmp_path):
    """json.loads raises a plain ValueError (not JSONDecodeError) for an int of more than 4300 digits."""
    path = tmp_path / "bus.json"
    path.write_text('{"vehicle_speed": {"unit": null, "values": [[1, ' + "7" * 5000 + "]]}}")
    with pytest.raises(InputError, match="not valid JSON: Exceeds the limit"):
        read_bus_file(path)


def test_missing_values_is_an_error(tmp_path):
    path = tmp_path / "bus.json"
    path.write_text(json.dumps({"vehicle_speed": {"unit": "Unit_KiloMeterPerHour"}}))
    with pytest.raises(InputError, match=r"signal 'vehicle_speed' has no 'values'"):
        read_bus_file(path)


def test_values_not_a_list_is_an_error(tmp_path):
    path = tmp_path / "bus.json"
    path.write_text(json.dumps({"vehicle_speed": {"unit": None, "values": {"a": 1}}}))
    with pytest.raises(InputError, match=r"'vehicle_speed': 'values' is a JSON object"):
        read_bus_file(path)


def test_missing_file_is_an_error(tmp_path):
    path = tmp_path / "nope_bus_signals.json"
    with pytest.raises(InputError, match="not found") as info:
        read_bus_file(path)
    assert info.value.path == str(path)


def test_bus_built_in_memory_and_numpy_time_work():
    t_us = np.array([T0], dtype=np.int64)
    bus = BusSignals(
        path="mem",
        signals={
            "steering_angle_calculated": Signal(t_us=t_us, values=np.array([1.0])),
            "steering_angle_calculated_sign": Signal(t_us=t_us, values=np.array([1.0])),
        },
    )
    assert steering_at(bus, np.int64(T0)).angle_deg == -1.0
