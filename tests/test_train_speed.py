"""``train/speed.py``: frames/s at batch 1 (Choi et al. 2024's FPS column), measured on the CPU at a
tiny size: the fields of the result, the median over windows, the synchronisation around each
timed window, the warm-up outside the clock, and bad values refused in one sentence.
``mtl-train speed`` on real runs is in tests/test_recipe_tag.py."""

from __future__ import annotations

import json
import statistics

import pytest
import torch
from torch import nn

from mtl_data.errors import MtlDataError
from mtl_data.train import speed
from mtl_data.train.speed import SpeedResult, device_name, measure_fps, read_speed

SIZE = (32, 64)


class Counting(nn.Module):
    """A conv whose forwards are counted (the events list records them in order)."""

    def __init__(self, events: list[str] | None = None):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.events = events if events is not None else []

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        self.events.append("forward")
        return {"out": self.conv(image)}


def test_a_cpu_measurement_has_every_field_and_its_fps_is_the_median_window():
    model = Counting()
    result = measure_fps(model, SIZE, device="cpu", warmup=2, iters=3, repeats=3)
    assert isinstance(result, SpeedResult)
    assert result.fps > 0 and len(result.fps_windows) == 3
    assert result.fps == statistics.median(result.fps_windows)
    assert result.ms_per_frame == pytest.approx(1000.0 / result.fps)
    assert result.device == device_name(torch.device("cpu")) and result.device
    assert (result.device_type, result.threads) == ("cpu", torch.get_num_threads())
    assert (result.image_size, result.batch_size, result.precision) == (SIZE, 1, "fp32")
    assert (result.compiled, result.channels_last) == (False, False)
    assert (result.warmup, result.iters, result.repeats) == (2, 3, 3)
    assert len(model.events) == 2 + 3 * 3  # warm-up (the first forward included) + timed
    assert not model.training  # measured in eval mode


def test_the_clock_starts_and_stops_after_a_synchronisation_and_never_times_the_warm_up(monkeypatch):
    events: list[str] = []
    ticks = iter(range(100))

    def clock() -> float:
        events.append("clock")
        return float(next(ticks))

    monkeypatch.setattr(speed, "_sync", lambda device: events.append("sync"))
    monkeypatch.setattr(speed.time, "perf_counter", clock)
    measure_fps(Counting(events), SIZE, device="cpu", warmup=2, iters=2, repeats=2)
    window = ["sync", "clock", "forward", "forward", "sync", "clock"]
    assert events == ["forward", "forward", *window, *window]


def test_the_result_is_the_median_over_windows_not_the_mean(monkeypatch):
    # windows of 10 forwards lasting 1 s, 0.5 s and 4 s: 10, 20 and 2.5 frames/s
    stamps = iter([0.0, 1.0, 1.0, 1.5, 1.5, 5.5])
    monkeypatch.setattr(speed.time, "perf_counter", lambda: next(stamps))
    result = measure_fps(Counting(), SIZE, device="cpu", warmup=0, iters=10, repeats=3)
    assert result.fps_windows == pytest.approx((10.0, 20.0, 2.5))
    assert result.fps == pytest.approx(10.0) and result.ms_per_frame == pytest.approx(100.0)


def test_bf16_autocast_runs_on_the_cpu_and_is_recorded():
    result = measure_fps(Counting(), SIZE, device="cpu", precision="bf16", warmup=1, iters=1, repeats=1)
    assert result.precision == "bf16" and result.fps > 0


def test_channels_last_can_be_asked_for_on_the_cpu():
    model = Counting()
    result = measure_fps(model, SIZE, device="cpu", channels_last=True, warmup=0, iters=1, repeats=1)
    assert result.channels_last and model.conv.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"image_size": (0, 64)}, "image size 0x64: both sides must be >= 1"),
        ({"warmup": -1}, "warmup must be >= 0"),
        ({"iters": 0}, "iters and repeats >= 1"),
        ({"repeats": 0}, "iters and repeats >= 1"),
        ({"precision": "fp8"}, "precision 'fp8': choose from fp32, bf16, fp16"),
        ({"device": "tpu"}, "device 'tpu'"),
    ],
)
def test_bad_values_are_one_error_sentence(options, fragment):
    kwargs = {"image_size": SIZE, "device": "cpu", "warmup": 0, "iters": 1, "repeats": 1, **options}
    size = kwargs.pop("image_size")
    with pytest.raises(MtlDataError) as info:
        measure_fps(Counting(), size, **kwargs)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_a_model_that_cannot_run_at_the_size_is_one_error_naming_the_size():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3))  # needs at least 5x5
    with pytest.raises(MtlDataError, match=r"cannot run at 3x3 on cpu .*--image-size"):
        measure_fps(model, (3, 3), device="cpu", warmup=0, iters=1, repeats=1)


def test_cuda_on_a_machine_without_it_is_refused_before_anything_runs():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(MtlDataError, match="CUDA is not available here"):
        measure_fps(Counting(), SIZE, device="cuda", warmup=0, iters=1, repeats=1)


def test_read_speed_is_none_without_a_measurement_and_refuses_another_file(tmp_path):
    assert read_speed(tmp_path) is None
    (tmp_path / "speed.json").write_text(json.dumps({"fps": "fast"}))
    with pytest.raises(MtlDataError, match="not a speed measurement"):
        read_speed(tmp_path)
    (tmp_path / "speed.json").write_text("{")
    with pytest.raises(MtlDataError, match="not readable JSON"):
        read_speed(tmp_path)


def test_the_commands_defaults_are_the_librarys():
    from mtl_data.cli.mtl_train import speed as command

    defaults = {p.name: p.default for p in command.params}
    assert (defaults["warmup"], defaults["iters"], defaults["repeats"]) == (speed.WARMUP, speed.ITERS, speed.REPEATS)
    assert defaults["precision"] == "fp32" and defaults["compiled"] is False and defaults["image_size"] is None
