"""Two-frame input (MultiNet++, issue 17): what a second frame costs in training and in streaming
inference, on CPU.

What is measured, and why: Chennupati et al. share the encoder between frames t and t-1 "so that
features computed in the previous frame can be leveraged without additional computation"; the
model here (``train/models/multiframe.py``) runs the encoder once on both frames in one batched
call and the neck and heads once. So

1. **Training, per sample**: a step on two frames should cost one more encoder forward+backward
   (and the fusion) than a step on one: the **floor** is the single-frame step of the same model
   on the same batch, and the ratio ``two / one`` is printed next to the ratio of their FLOPs
   (``FlopCounterMode`` over a step: convolutions and matrix products), the ratio the arithmetic
   alone predicts.
2. **Streaming inference, per frame**: ``FrameStream`` caches the previous frame's encoder maps,
   so a frame costs one encoder pass + the fusion + neck + heads: the floor is the single-frame
   model's forward on the same frames; target ``stream / single <= 1.15``. The batched two-frame
   forward (both frames encoded every time, what a model without the cache would cost) is
   printed for comparison.

Setting: ``--model`` (default resnet18-fpn) with ``--tasks`` (default seg,depth: the paper's
tasks), ``--fusion`` sum (the paper's) and conv1x1, at ``--size`` (default 128x256) on one
thread (``torch.set_num_threads(1)``); training at batch ``--batch`` (forward, the sum of the
outputs' means, backward); inference at batch 1, eval, ``torch.inference_mode``, over a stream
of ``--stream`` frames. CPU time of this process (``common.measure``), best of ``--repeats``,
the measured sides interleaved repeat by repeat. Prints, never asserts.

Run: ``.venv/bin/python bench/frames.py`` (from the repository root).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/common.py, bench/models.py
import common  # noqa: E402
from models import count_flops  # noqa: E402

from mtl_data.train.models import create_model  # noqa: E402
from mtl_data.train.models.multiframe import FrameStream, MultiFrameModel, list_fusions  # noqa: E402


def train_step(model, *inputs: torch.Tensor) -> None:
    """zero_grad, forward, a scalar loss over every output, backward."""
    model.zero_grad(set_to_none=True)
    collected = model(*inputs)
    tensors = []
    for value in collected.values():
        values = value.values() if isinstance(value, dict) else [value]
        tensors += [v for v in values if isinstance(v, torch.Tensor) and v.is_floating_point()]
    torch.stack([t.float().mean() for t in tensors]).sum().backward()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="resnet18-fpn")
    ap.add_argument("--tasks", default="seg,depth", help="comma-separated (default: MultiNet++'s seg,depth)")
    ap.add_argument("--size", type=common.parse_size, default=(128, 256), help="input H x W (default 128x256)")
    ap.add_argument("--batch", type=int, default=2, help="training batch (default 2)")
    ap.add_argument("--stream", type=int, default=8, help="frames of the inference stream (default 8)")
    ap.add_argument("--repeats", type=int, default=3, help="repeats; the best is reported (default 3)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    h, w = args.size
    torch.manual_seed(0)
    base = create_model(args.model, tasks=tasks)
    gen = torch.Generator().manual_seed(0)
    image = torch.randn(args.batch, 3, h, w, generator=gen)  # (B, 3, H, W)
    prev = torch.randn(args.batch, 1, 3, h, w, generator=gen)  # (B, 1, 3, H, W)
    present = torch.ones(args.batch, 1, dtype=torch.bool)
    video = [torch.randn(1, 3, h, w, generator=gen) for _ in range(args.stream)]  # (1, 3, H, W) each

    print(
        f"\nTwo-frame input: {args.model}, tasks {', '.join(tasks)}, {h}x{w}, torch {torch.__version__}, "
        f"1 thread; CPU time (time.process_time), best of {args.repeats}, interleaved"
    )
    print(f"training: a step (forward, backward) at batch {args.batch}, per sample; floor = the single-frame step")
    print(f"inference: batch 1, eval, inference_mode, per frame over {args.stream} frames; floor = single-frame")

    results = {}
    for fusion in list_fusions():
        model = MultiFrameModel(base, 2, fusion)
        model.train()
        base.train()
        train_step(base, image)  # warm-up: allocator, first-call paths
        train_step(model, image, prev, present)
        one_flops = count_flops(lambda: train_step(base, image)).get_total_flops()
        two_flops = count_flops(lambda m=model: train_step(m, image, prev, present)).get_total_flops()
        one_t, two_t = [], []
        for _ in range(args.repeats):
            one_t.append(common.measure(lambda: train_step(base, image)))
            two_t.append(common.measure(lambda m=model: train_step(m, image, prev, present)))
        one, two = common.best(one_t).per(args.batch), common.best(two_t).per(args.batch)

        model.eval()
        base.eval()

        def single() -> None:
            for frame in video:
                base(frame)

        def streamed(m=model) -> None:
            stream = FrameStream(m)
            for frame in video:
                stream(frame)

        def batched(m=model) -> None:
            for i, frame in enumerate(video):
                m(frame, video[i - 1][:, None] if i else None)

        with torch.inference_mode():
            single()
            streamed()
            times: dict[str, list[common.Timing]] = {"single": [], "stream": [], "batched": []}
            for _ in range(args.repeats):
                times["single"].append(common.measure(single))
                times["stream"].append(common.measure(streamed))
                times["batched"].append(common.measure(batched))
        infer = {k: common.best(v).per(args.stream) for k, v in times.items()}
        results[fusion] = (one, two, one_flops, two_flops, infer)

    print(f"\n{'fusion':<10}{'train 1f ms':>12}{'train 2f ms':>12}{'2f / 1f':>9}{'FLOPs 2f/1f':>13}", end="")
    print(f"{'infer 1f ms':>13}{'stream ms':>11}{'batched 2f ms':>15}")
    for fusion, (one, two, one_flops, two_flops, infer) in results.items():
        print(
            f"{fusion:<10}{1000 * one.cpu:>12.1f}{1000 * two.cpu:>12.1f}{two.cpu / one.cpu:>9.2f}"
            f"{two_flops / one_flops:>13.2f}{1000 * infer['single'].cpu:>13.1f}{1000 * infer['stream'].cpu:>11.1f}"
            f"{1000 * infer['batched'].cpu:>15.1f}"
        )
    print()
    for fusion, (one, two, one_flops, two_flops, infer) in results.items():
        print(
            f"  train, two frames / one frame per sample ({fusion}) {two.cpu / one.cpu:.2f}  "
            f"(FLOPs ratio {two_flops / one_flops:.2f})"
        )
        print(
            f"  stream / single-frame inference per frame ({fusion}) "
            f"{infer['stream'].cpu / infer['single'].cpu:.2f}  target <= 1.15"
        )
        print(
            f"  batched two-frame / single-frame inference per frame ({fusion}) "
            f"{infer['batched'].cpu / infer['single'].cpu:.2f}  (no cache: both frames encoded)"
        )
    print(f"command: {common.command_line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
