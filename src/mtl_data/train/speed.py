"""Inference speed: frames per second of a model at batch 1, measured on this machine, never copied.

Choi et al. 2024 (TAG, Sec. IV-E) report "the inference speed for all baselines on an NVIDIA Titan
RTX GPU, with a batch size of 1" in Table II's and Table III's FPS columns, next to GFLOPs and
parameters; trainer.md section 6 asks for FPS at batch 1, a stated resolution, after a warm-up,
synchronised. ``mtl-train speed RUN`` writes this module's measurement to ``RUN/speed.json``,
which ``mtl-train report --layout tag`` reads (a table never shows an FPS that was not measured).

**What is timed**: ``model(image)`` on one (1, 3, H, W) float image already on the device,
normalised (the network's cost does not depend on the pixel values): the encoder, the neck and
every task head (for a multi-frame run, ``model(image)`` without previous frames: one encoder
pass, the frame standing in for its predecessors, the cost per frame of streaming inference with
the previous frames' features cached, ``models/multiframe.py``). Not timed: reading and
decoding the image, the host-to-device copy, and the decoding of outputs into label maps or
boxes (peak extraction, NMS). This is what the speed scripts of the real-time baselines of
Table II time (DDRNet, Hong et al. 2021; PIDNet, Xu et al. 2023: a random input on the GPU,
the model's forward in a loop).

**How**:

* eval mode (BatchNorm uses its running statistics; no dropout) and ``torch.inference_mode``;
* ``precision``: ``fp32``, or ``bf16`` / ``fp16`` autocast as the trainer runs them
  (``precision.autocast``; parameters stay fp32);
* channels-last memory format on CUDA (as training and evaluation run there), contiguous on
  the CPU, unless ``channels_last`` says otherwise;
* ``torch.backends.cudnn.benchmark`` on during the measurement (one fixed input shape: cuDNN
  may pick its fastest convolution algorithms, as the baselines' scripts do), restored after;
* optional ``torch.compile`` of the model; compilation happens in the warm-up, never in a timed
  window;
* ``warmup`` untimed forwards, then ``repeats`` windows of ``iters`` forwards each. On CUDA,
  ``torch.cuda.synchronize()`` before starting and before stopping each window's clock: kernels
  run asynchronously, and without it the clock would time the launch queue, not the GPU. On the
  CPU every forward returns finished work, so the window is timed with ``perf_counter`` alone
  (torch's intra-op threads as set, recorded in the result). A window's speed is
  ``iters / seconds``; the result is the **median over windows** (one window slowed by another
  process does not move it) with every window's value kept.

Batch 1 because a car's camera delivers one frame at a time: the latency of a frame, not the
throughput of a large batch, is what "real time" means in the paper.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import platform
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mtl_data.errors import MtlDataError
from mtl_data.files import read_json_document, write_atomic
from mtl_data.train.distributed import resolve_device
from mtl_data.train.precision import PRECISIONS, autocast, check_precision
from mtl_data.train.run import load_run

log = logging.getLogger(__name__)

SPEED_FILE = "speed.json"
#: the defaults of ``mtl-train speed`` (a GPU window of 50 forwards of a 30 frames/s model is
#: ~1.7 s: long enough for the clock, short enough to repeat five times)
WARMUP, ITERS, REPEATS = 10, 50, 5


@dataclass(frozen=True)
class SpeedResult:
    """One measurement (module docstring); ``RUN/speed.json`` holds ``dataclasses.asdict`` of it.

    Attributes:
        fps: frames per second, the median over the timed windows.
        ms_per_frame: 1000 / fps.
        fps_windows: every window's frames per second, in the order measured.
        device: the GPU's name (``torch.cuda.get_device_name``) or the CPU's model name.
        device_type: ``cuda`` or ``cpu``.
        threads: torch's intra-op threads on the CPU (what a CPU number depends on); None on CUDA.
        image_size: (H, W) of the input, pixels.
        batch_size: 1 (module docstring).
        precision: ``fp32``, ``bf16`` or ``fp16`` (autocast).
        compiled: whether the model ran under ``torch.compile``.
        channels_last: the input's and the model's memory format.
        warmup: untimed forwards before the first window.
        iters: forwards per timed window.
        repeats: timed windows.
        torch: torch's version.
    """

    fps: float
    ms_per_frame: float
    fps_windows: tuple[float, ...]
    device: str
    device_type: str
    threads: int | None
    image_size: tuple[int, int]
    batch_size: int
    precision: str
    compiled: bool
    channels_last: bool
    warmup: int
    iters: int
    repeats: int
    torch: str


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name (``/proc/cpuinfo``, else ``platform``)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass  # not Linux: platform below
    return platform.processor() or platform.machine() or "unknown CPU"


@contextlib.contextmanager
def _cudnn_benchmark(on: bool) -> Iterator[None]:
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = on
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_fps(
    model: nn.Module,
    image_size: tuple[int, int],
    *,
    device: str | torch.device = "auto",
    precision: str = "fp32",
    compile: bool = False,
    channels_last: bool | None = None,
    warmup: int = WARMUP,
    iters: int = ITERS,
    repeats: int = REPEATS,
) -> SpeedResult:
    """Frames per second of ``model``'s forward at batch 1 (module docstring).

    The model is moved to the device and left there in eval mode (a caller that goes on training
    puts it back in train mode).

    Args:
        model: ``model(image) -> outputs`` for an image (1, 3, H, W), normalised.
        image_size: (H, W) of the input, pixels.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N`` or a device.
        precision: ``fp32``, ``bf16`` or ``fp16`` (autocast).
        compile: run the model under ``torch.compile``.
        channels_last: the memory format; None = channels-last on CUDA only.
        warmup: untimed forwards first (>= 0; with ``compile``, at least 1 is used, which compiles).
        iters: forwards per timed window (>= 1).
        repeats: timed windows (>= 1).

    Raises:
        MtlDataError: a bad size, count, precision or device, or a model that cannot run at the size.
    """
    h, w = image_size
    if h < 1 or w < 1:
        raise MtlDataError(f"image size {h}x{w}: both sides must be >= 1 pixel")
    if warmup < 0 or iters < 1 or repeats < 1:
        raise MtlDataError(f"warmup must be >= 0, iters and repeats >= 1; got {warmup}, {iters}, {repeats}")
    torch_device = device if isinstance(device, torch.device) else resolve_device(device)
    if precision not in PRECISIONS:
        raise MtlDataError(f"precision {precision!r}: choose from {', '.join(PRECISIONS)}")
    check_precision(precision, torch_device)
    memory = torch.channels_last if (torch_device.type == "cuda" if channels_last is None else channels_last) else None
    model = model.to(torch_device).eval()
    if memory is not None:
        model = model.to(memory_format=memory)
    run = torch.compile(model) if compile else model
    # A fixed, seeded normalised image: N(0, 1) is the range a normalised photograph has.
    image = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0)).to(torch_device)
    if memory is not None:
        image = image.contiguous(memory_format=memory)

    def forward() -> None:
        with autocast(precision, torch_device):
            run(image)

    windows: list[float] = []
    with torch.inference_mode(), _cudnn_benchmark(torch_device.type == "cuda"):
        try:
            forward()  # the first call allocates, compiles, picks cuDNN algorithms: never timed
        except RuntimeError as exc:
            raise MtlDataError(
                f"the model cannot run at {h}x{w} on {torch_device} ({str(exc).splitlines()[0]}); "
                "choose another --image-size"
            ) from None
        for _ in range(max(warmup - 1, 0)):
            forward()
        for _ in range(repeats):
            _sync(torch_device)
            start = time.perf_counter()
            for _ in range(iters):
                forward()
            _sync(torch_device)
            windows.append(iters / (time.perf_counter() - start))
    fps = statistics.median(windows)
    return SpeedResult(
        fps=fps,
        ms_per_frame=1000.0 / fps,
        fps_windows=tuple(windows),
        device=device_name(torch_device),
        device_type=torch_device.type,
        threads=torch.get_num_threads() if torch_device.type == "cpu" else None,
        image_size=(h, w),
        batch_size=1,
        precision=precision,
        compiled=bool(compile),
        channels_last=memory is not None,
        warmup=warmup,
        iters=iters,
        repeats=repeats,
        torch=torch.__version__,
    )


def measure_run(
    run: str | Path,
    *,
    image_size: tuple[int, int] | None = None,
    precision: str = "fp32",
    compile: bool = False,
    warmup: int = WARMUP,
    iters: int = ITERS,
    repeats: int = REPEATS,
    device: str = "auto",
) -> dict:
    """Measure a run's model (rebuilt from its last checkpoint) and write ``RUN/speed.json``.

    ``image_size`` defaults to the run's training size (the size its GFLOPs are counted at in
    ``mtl-train report``). A new measurement replaces the file.

    Returns:
        ``speed.json``'s document: the ``SpeedResult`` fields plus ``run``, ``model`` and ``step``
        (the checkpoint's), and ``path``.

    Raises:
        MtlDataError: not a run, a bad option (``measure_fps``), or a file that cannot be written.
    """
    run = Path(run)
    config, model, state = load_run(run)
    size = tuple(image_size or config.loader.image_size)
    result = measure_fps(
        model,
        size,
        device=device,
        precision=precision,
        compile=compile,
        warmup=warmup,
        iters=iters,
        repeats=repeats,
    )
    doc = {"run": str(run), "model": config.model, "step": int(state["step"]), **dataclasses.asdict(result)}
    path = run / SPEED_FILE
    try:
        write_atomic(path, json.dumps(doc, indent=1) + "\n")
    except OSError as exc:
        raise MtlDataError(f"{path}: cannot write ({exc.strerror or exc})") from None
    log.info("%s: %.1f frames/s on %s", run, result.fps, result.device)
    return {**doc, "path": str(path)}


def read_speed(run: str | Path) -> dict | None:
    """``RUN/speed.json`` as written by ``measure_run``; None when the run was not measured.

    Raises:
        MtlDataError: a file that is not a speed measurement.
    """
    path = Path(run) / SPEED_FILE
    if not path.is_file():
        return None
    doc = read_json_document(path, f"{path}: missing")
    if not isinstance(doc, dict) or not isinstance(doc.get("fps"), (int, float)) or "device" not in doc:
        raise MtlDataError(f"{path}: not a speed measurement (no fps and device); re-run mtl-train speed {run}")
    return doc
