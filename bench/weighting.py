"""The cost of a step per weighting strategy, and of the asymmetric mode, against a plain step.

What is compared, and why: design.md section 7 sets "asymmetric mode <= 1.2x symmetric per
sample"; issue 12 asks what each weighting strategy's step costs relative to ``equal``
(GradNorm and the gradient-conflict methods pay extra backward passes).

On synthetic shards of all five sources, one pre-built batch (every task of the run labelled by
some sample), the run's model and the trainer's own step functions (``steps.symmetric_step``,
``steps.asymmetric_step``) with the trainer's optimizers:

* **floor**: ``symmetric_step`` with the ``equal`` weighting;
* every registered weighting strategy in ``symmetric_step``;
* ``asymmetric_step`` with ``equal``, every k = the batch (the parts step every step) and with
  the thesis's ratios (encoder 3, heads 2 batches: gradients accumulate between steps).

CPU time of this process (``time.process_time``), one torch thread, interleaved rounds, best of
``--repeats``. Prints, never asserts. Run: ``.venv/bin/python bench/weighting.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (bench/common.py: the timing)
import trainer  # noqa: E402  (bench/trainer.py: the synthetic shards)

from mtl_data.shards.reader import ShardSet  # noqa: E402
from mtl_data.train.config import TrainConfig, apply_overrides  # noqa: E402
from mtl_data.train.data.loader import build_loader  # noqa: E402
from mtl_data.train.distributed import DistInfo  # noqa: E402
from mtl_data.train.optim import build_optimizer, build_part_optimizers, build_schedule  # noqa: E402
from mtl_data.train.precision import grad_scaler  # noqa: E402
from mtl_data.train.run import build_model, run_tasks, train_loader_config  # noqa: E402
from mtl_data.train.steps import asymmetric_step, symmetric_step  # noqa: E402
from mtl_data.train.weighting import create_weighting, list_weightings  # noqa: E402

CPU = DistInfo(0, 1, 0, torch.device("cpu"))


def stepper(
    config: TrainConfig,
    batch: dict,
    tasks: tuple[str, ...],
    classes,
    weighting_name: str,
    asymmetric_k: dict[str, int] | None,
) -> Callable[[int], None]:
    """A closure running one training step of a fresh model (the same initialisation each time)."""
    model = build_model(config, tasks, classes)
    weighting = create_weighting(weighting_name, list(tasks))
    weighting.attach(model)
    if asymmetric_k is None:
        parts = dict(model.parts())
        if any(True for _ in weighting.parameters()):
            parts["weighting"] = weighting
        optimizer = build_optimizer(parts, config.optim)
        schedule = build_schedule(optimizer, 10_000, config.schedule)
        scaler = grad_scaler("fp32", CPU.device)
        params = [p for g in optimizer.param_groups for p in g["params"]]
        return lambda step: symmetric_step(
            model, model.tasks, weighting, batch, step, optimizer, schedule, scaler, CPU, "fp32", 0.0, params
        )
    parts, part_params = build_part_optimizers(
        model, weighting, config.optim, config.schedule, 10_000, asymmetric_k, config.loader.batch_size, tasks
    )
    return lambda step: asymmetric_step(
        model, model.tasks, weighting, batch, step, parts, part_params, CPU, "fp32", 0.0
    )


def seconds_per_step(run: Callable[[int], None], steps: int) -> float:
    """CPU seconds of this process per step, after one warm-up step (allocations, first-step state)."""
    run(0)
    return common.measure(lambda: [run(step) for step in range(1, steps + 1)]).cpu / steps


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="resnet18-fpn")
    ap.add_argument("--tasks", default="seg,depth,det2d,sign")
    ap.add_argument("--size", default="96x192", help="HxW")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=4, help="timed steps per measurement")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--strategies", default=None, help="comma-separated; default: every registered one")
    ap.add_argument(
        "--shards",
        type=Path,
        default=None,
        help="an existing shards root of the synthetic sources (default: synthesize and ingest all five here)",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    h, w = (int(v) for v in args.size.split("x"))
    tasks = tuple(args.tasks.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        shards = args.shards or trainer.make_shards(Path(tmp))
        config = apply_overrides(
            TrainConfig(),
            {
                "shards": str(shards),
                "model": args.model,
                "tasks": tasks,
                "loader.image_size": (h, w),
                "loader.batch_size": args.batch_size,
                "loader.workers": 0,
                "device": "cpu",
                "loader.mix": {"a2d2": 1.0, "kitti": 1.0, "gtsrb": 1.0},
            },
        )
        tasks = run_tasks(config, ShardSet.open(shards))
        loader = build_loader(config.shards, train_loader_config(config, tasks), rank=0, world_size=1)
        stream = iter(loader)
        batch = next(b for b in stream if all(b["present"][t].any() for t in tasks))
        stream.close()
        names = args.strategies.split(",") if args.strategies else list_weightings()
        cases: dict[str, tuple[str, dict | None]] = {f"symmetric {n}": (n, None) for n in names}
        b = args.batch_size
        cases["asymmetric equal, every k = batch"] = ("equal", {})
        cases["asymmetric equal, k encoder 3 / heads 2 batches"] = (
            "equal",
            {"encoder": 3 * b, **{t: 2 * b for t in tasks}},
        )
        best = dict.fromkeys(cases, float("inf"))
        for _ in range(args.repeats):
            for label, (name, k) in cases.items():
                run = stepper(dataclasses.replace(config), batch, tasks, loader.classes, name, k)
                best[label] = min(best[label], seconds_per_step(run, args.steps))
        floor = best["symmetric equal"]
        print(
            f"Step cost per weighting strategy: {args.model}, tasks {', '.join(tasks)}, {h}x{w}, batch {b}, "
            f"CPU time, one torch thread, best of {args.repeats}"
        )
        print(f"  {'case':52s} {'ms/step':>9s} {'x equal (floor)':>16s}")
        for label, value in best.items():
            print(f"  {label:52s} {value * 1000:9.1f} {value / floor:16.2f}")
        asym = best["asymmetric equal, k encoder 3 / heads 2 batches"] / floor
        print(f"  asymmetric / symmetric per sample = {asym:.2f} (target <= 1.2)")
    print(f"command: {common.command_line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
