"""Model size and speed: parameters, GFLOPs, CPU forward+backward time against a matmul floor,
and (``--device cuda``) inference FPS.

What is measured, and why: trainer.md section 6 asks that parameter counts, GFLOPs and FPS be
"reported, never guessed", at a stated resolution. For every registered model (``--models``
filters), built with every registered task (``list_tasks()``; the heads count too):

1. **Parameters**: in total and per part (``MultiTaskModel.parts()``: encoder, neck, each head),
   the parts a trainer gives their own optimizer or parameter group; GFLOPs per part too.
2. **GFLOPs** of one forward pass at batch 1 (``--size``, default 256x512 H x W), counted by
   ``torch.utils.flop_counter.FlopCounterMode``: it counts convolutions and matrix products
   (not BatchNorm, activations, pooling or resizing) and a multiply-add as 2 FLOPs, so GMACs,
   the unit many papers quote, is GFLOPs / 2.
3. **CPU forward + backward**, ms per sample, at batch ``--batch`` (default 2) on one thread
   (``torch.set_num_threads(1)``): process CPU time (``time.process_time``) of one training step
   (zero_grad, forward, a scalar loss over every output, backward), after one warm-up step,
   best of ``--repeats``.
4. **Floor**: in the same run, interleaved with 3 repeat by repeat (a burst of load from other
   work on the machine then hits both), the CPU time of plain ``torch.mm`` (1024 x 1024, fp32, one
   thread) doing as many FLOPs as the training step (counted by FlopCounterMode during a step).
   ``model / floor`` is the model's achieved FLOP/s as a share of the matmul's: how much of the
   core's dense-math throughput the convolutions (and everything uncounted) leave.
5. With ``--device cuda``: frames per second at batch 1, eval mode, ``torch.inference_mode``,
   channels_last, fp32 and bf16 autocast, after ``--cuda-warmup`` iterations, timed over
   ``--cuda-iters`` with ``torch.cuda.synchronize()`` before and after.

Prints tables and never asserts. ``--tiny`` (64x128, one repeat) is for the test suite.

Run: ``.venv/bin/python bench/models.py`` (from the repository root), e.g.
``.venv/bin/python bench/models.py --models 'resnet18-fpn,resnet50-*' --repeats 3``.
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/common.py
import common  # noqa: E402

from mtl_data.train.models import MultiTaskModel, create_model, list_models  # noqa: E402
from mtl_data.train.tasks import list_tasks  # noqa: E402

#: side of the square matrices of the floor's torch.mm
MM_SIDE = 1024


def select_models(patterns: str | None) -> list[str]:
    """Registered models matching any of the comma-separated fnmatch ``patterns`` (all if None)."""
    names = list_models()
    if patterns is None:
        return names
    chosen = [n for n in names if any(fnmatch.fnmatchcase(n, p.strip()) for p in patterns.split(","))]
    if not chosen:
        raise SystemExit(f"--models {patterns!r} matches no model; registered: {', '.join(names)}")
    return chosen


# ---- measurements ---------------------------------------------------------------------------------


def scalar_loss(model: MultiTaskModel, image: torch.Tensor) -> torch.Tensor:
    """The sum of the means of every floating tensor the model outputs (the neck's maps when it
    has no heads): a loss that reaches every head."""
    tensors: list[torch.Tensor] = []

    def collect(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            if value.is_floating_point():
                tensors.append(value)
        elif isinstance(value, dict):
            for v in value.values():
                collect(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                collect(v)

    collect(model(image) if model.heads else model.features(image))
    return torch.stack([t.float().mean() for t in tensors]).sum()


def train_step(model: MultiTaskModel, image: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    scalar_loss(model, image).backward()


def count_flops(fn: Callable[[], object]) -> FlopCounterMode:
    """The counter after ``fn()``: ``get_total_flops()``, and per module ``get_flop_counts()``
    keyed by the module path under the root's class name (``"MultiTaskModel.neck"``)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter


def cuda_fps(model: MultiTaskModel, size: tuple[int, int], bf16: bool, warmup: int, iters: int) -> float:
    """Frames/s at batch 1, eval, inference mode, channels_last, fp32 or bf16 autocast."""
    image = torch.randn(1, 3, *size, device="cuda").contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
        for _ in range(warmup):
            model(image)
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(iters):
            model(image)
        torch.cuda.synchronize()
    return iters / (time.perf_counter() - t)


def measure(name: str, tasks: list[str], args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(0)
    model = create_model(name, tasks=tasks)
    res: dict[str, Any] = {
        "params": sum(p.numel() for p in model.parameters()),
        "parts": {k: sum(p.numel() for p in m.parameters()) for k, m in model.parts().items()},
    }

    model.eval()
    one = torch.randn(1, 3, *args.size)  # (1, 3, H, W)
    with torch.no_grad():
        counter = count_flops(lambda: model(one))
    res["flops"] = counter.get_total_flops()
    per_module = counter.get_flop_counts()
    res["part_flops"] = {k: sum(per_module.get(f"{type(model).__name__}.{k}", {}).values()) for k in res["parts"]}

    model.train()
    batch = torch.randn(args.batch, 3, *args.size)  # (B, 3, H, W)
    train_step(model, batch)  # warm-up: allocator, first-call paths
    step_flops = count_flops(lambda: train_step(model, batch)).get_total_flops()
    a = torch.randn(MM_SIDE, MM_SIDE)
    b = torch.randn(MM_SIDE, MM_SIDE)
    mm_flops = 2 * MM_SIDE**3
    reps = max(1, round(step_flops / mm_flops))

    def floor() -> None:
        for _ in range(reps):
            torch.mm(a, b)

    floor_times, step_times = [], []
    for _ in range(args.repeats):
        floor_times.append(common.measure(floor).cpu)
        step_times.append(common.measure(lambda: train_step(model, batch)).cpu)
    floor_rate = reps * mm_flops / min(floor_times)  # FLOP/s of torch.mm on one thread
    res["step_flops"] = step_flops
    res["step_ms"] = 1000 * min(step_times) / args.batch
    res["floor_ms"] = 1000 * step_flops / floor_rate / args.batch
    res["floor_rate"] = floor_rate
    res["rate"] = step_flops / min(step_times)

    if args.device == "cuda":
        model = model.to("cuda", memory_format=torch.channels_last).eval()
        res["fps"] = {
            label: cuda_fps(model, args.size, bf16, args.cuda_warmup, args.cuda_iters)
            for label, bf16 in (("fp32", False), ("bf16", True))
        }
    return res


# ---- main -----------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=None, help="comma-separated names or fnmatch patterns (default: all)")
    ap.add_argument("--size", type=common.parse_size, default=None, help="input H x W (default 256x512; --tiny 64x128)")
    ap.add_argument("--batch", type=int, default=2, help="batch of the CPU forward+backward timing")
    ap.add_argument("--repeats", type=int, default=None, help="repeats; the best is reported (default 3; --tiny 1)")
    ap.add_argument("--tiny", action="store_true", help="64x128, one repeat: a quick check that it all runs")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="cuda: also inference FPS")
    ap.add_argument("--cuda-warmup", type=int, default=10)
    ap.add_argument("--cuda-iters", type=int, default=50)
    args = ap.parse_args()
    args.size = args.size or ((64, 128) if args.tiny else (256, 512))
    args.repeats = args.repeats or (1 if args.tiny else 3)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    names = select_models(args.models)
    tasks = list_tasks()
    torch.set_num_threads(1)

    h, w = args.size
    print(
        f"\nModels at {h}x{w} with {len(tasks)} registered task(s) ({', '.join(tasks) or 'none: encoder + neck'}); "
        f"torch {torch.__version__}, {torch.get_num_threads()} thread"
    )
    print(
        "GFLOPs: one forward, batch 1, counted by torch.utils.flop_counter.FlopCounterMode (convolutions and "
        "matrix products only; a multiply-add counts as 2 FLOPs, so GMACs = GFLOPs / 2)"
    )
    print(
        f"fwd+bwd: CPU time (time.process_time) of a training step at batch {args.batch}, per sample, best of "
        f"{args.repeats} after 1 warm-up; floor: torch.mm {MM_SIDE}x{MM_SIDE} fp32 on one thread doing the step's "
        f"FLOPs, interleaved with it"
    )
    head = (
        f"{'model':<18}{'params M':>10}{'GFLOPs':>9}{'GMACs':>8}{'fwd+bwd ms':>12}{'floor ms':>10}"
        f"{'GFLOP/s':>9}{'model/floor':>13}"
    )
    if args.device == "cuda":
        head += f"{'FPS fp32':>10}{'FPS bf16':>10}"
    print(head)
    results = {}
    for name in names:
        res = results[name] = measure(name, tasks, args)
        row = (
            f"{name:<18}{res['params'] / 1e6:>10.2f}{res['flops'] / 1e9:>9.2f}{res['flops'] / 2e9:>8.2f}"
            f"{res['step_ms']:>12.1f}{res['floor_ms']:>10.1f}{res['rate'] / 1e9:>9.1f}"
            f"{res['floor_ms'] / res['step_ms']:>13.2f}"
        )
        if "fps" in res:
            row += f"{res['fps']['fp32']:>10.1f}{res['fps']['bf16']:>10.1f}"
        print(row, flush=True)
    print("\nPer part: parameters M / GFLOPs (one forward, batch 1)")
    for name, res in results.items():
        print(
            f"  {name:<18}"
            + ", ".join(
                f"{part} {n / 1e6:.3f} / {res['part_flops'][part] / 1e9:.2f}" for part, n in res["parts"].items()
            )
        )
    rates = [res["floor_rate"] for res in results.values()]
    print(f"\nfloor torch.mm throughput, one thread: {min(rates) / 1e9:.1f} .. {max(rates) / 1e9:.1f} GFLOP/s")
    if args.device == "cuda":
        print(
            f"FPS on {torch.cuda.get_device_name()}: batch 1, {args.cuda_warmup} warm-up, {args.cuda_iters} timed "
            f"iterations, channels_last, inference_mode, eval; bf16 = torch.autocast(dtype=bfloat16)"
        )
    print(f"command: {common.command_line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
