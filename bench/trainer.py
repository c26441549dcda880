"""Trainer overhead on CPU: a step of ``mtl-train``'s loop against a bare forward/backward/step.

What is compared, and why: design.md section 7 sets "loop overhead <= 10% of a bare
forward/backward/step on CPU" (issue 11: the loop's step time vs a bare step of the same model
on the same pre-built batch, ratio >= 0.9).

* **floor (bare)**: the model the run builds, AdamW over its parameters, one pre-built batch
  of the same loader (every task present as the stream delivers it), and per step: forward,
  the sum of the tasks' ``batch_loss``, backward, ``step``, ``zero_grad``. Nothing else.
* **loop**: ``mtl_data.train.loop.train`` itself, in this process, on synthetic shards of all
  five sources: the stream from one loader worker process (its decoding is not this process's
  time), the batch widened and normalised here, the global label counts, the weighting, the
  scheduler, non-finite tracking, metrics.csv / TensorBoard rows every ``--log-every`` steps.
  Its per-step cost is the difference of two runs (``--steps`` and ``--warmup`` steps) divided
  by the difference of steps, so start-up and the final evaluation cancel out.

CPU time of this process only (``time.process_time``; one torch thread for both), interleaved,
best of ``--repeats``. Prints, never asserts. Run: ``.venv/bin/python bench/trainer.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import shutil
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/common.py
import common  # noqa: E402

from mtl_data.cli.main import main as mtl_data  # noqa: E402
from mtl_data.shards.reader import ShardSet  # noqa: E402
from mtl_data.synth import create_synth, list_synths  # noqa: E402
from mtl_data.train.config import TrainConfig, apply_overrides  # noqa: E402
from mtl_data.train.data.loader import build_loader  # noqa: E402
from mtl_data.train.loop import train  # noqa: E402
from mtl_data.train.run import build_model, run_tasks, train_loader_config  # noqa: E402


def make_shards(root: Path) -> Path:
    """Synthetic shards of all five sources (the demo's), quietly."""
    out = root / "shards"
    for source in list_synths():
        raw = root / "raw" / source
        create_synth(source, raw, seed=0)
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            try:
                mtl_data(["ingest", source, str(raw), "--to", str(out), "--workers", "1"])
            except SystemExit as exc:
                if exc.code:
                    raise RuntimeError(f"ingest {source} failed") from None
    return out


def bare_seconds(config: TrainConfig, steps: int) -> float:
    """CPU seconds of this process per bare step (module docstring)."""
    shard_set = ShardSet.open(Path(config.shards))
    tasks = run_tasks(config, shard_set)
    loader = build_loader(config.shards, train_loader_config(config, tasks), rank=0, world_size=1)
    batch = next(iter(loader))
    model = build_model(config, tasks, loader.classes)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        outputs = model(batch["image"])
        loss = sum(model.tasks[t].batch_loss(outputs[t], batch) for t in tasks)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up
    return common.measure(lambda: [step() for _ in range(steps)]).cpu_self / steps


def loop_seconds(config: TrainConfig, root: Path, warmup: int, steps: int) -> float:
    """CPU seconds of this process per step of ``train`` (difference of two runs, module
    docstring; the loader worker's CPU, reaped with it, is left out: ``cpu_self``)."""
    times = []
    for n in (warmup, steps):
        out = root / f"run_{n}"
        shutil.rmtree(out, ignore_errors=True)
        run = dataclasses.replace(config, out=str(out), steps=n)
        times.append(common.measure(lambda run=run: train(run)).cpu_self)
    return (times[1] - times[0]) / (steps - warmup)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="resnet18-fpn")
    ap.add_argument("--size", default="128x256", help="HxW")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=25, help="steps of the longer loop run")
    ap.add_argument("--warmup", type=int, default=5, help="steps of the shorter loop run")
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--loader-workers",
        type=int,
        default=1,
        help="loader worker processes of the loop (0: decoding in this process, counted in the loop's CPU)",
    )
    ap.add_argument(
        "--shards",
        type=Path,
        default=None,
        help="an existing shards root of the synthetic sources (default: synthesize and ingest all five here)",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    h, w = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shards = args.shards or make_shards(root)
        config = apply_overrides(
            TrainConfig(),
            {
                "shards": str(shards),
                "out": str(root / "run"),
                "model": args.model,
                "loader.image_size": (h, w),
                "loader.batch_size": args.batch_size,
                "loader.workers": args.loader_workers,
                "log_every": args.log_every,
                "save_every": 0,
                "device": "cpu",
            },
        )
        # one untimed step: what the first run of a process pays once (imports such as TensorBoard's,
        # first calls) would otherwise fall on the shorter run and shrink the difference
        train(dataclasses.replace(config, out=str(root / "run_warm"), steps=1))
        bare, loop = [], []
        for _ in range(args.repeats):
            bare.append(bare_seconds(config, args.steps - args.warmup))
            loop.append(loop_seconds(config, root, args.warmup, args.steps))
        b, lo = min(bare), min(loop)
        print(
            f"Trainer overhead: {args.model}, all seven tasks, {h}x{w}, batch {args.batch_size}, CPU time of this "
            f"process, one torch thread, best of {args.repeats}"
        )
        print(f"  floor: bare forward/backward/step on a pre-built batch  {b * 1000:9.1f} ms/step")
        print(f"  loop:  mtl-train's loop ({args.loader_workers} loader worker(s))            {lo * 1000:9.1f} ms/step")
        print(f"  bare / loop = {b / lo:.3f} of floor (target >= 0.9)")
    print(f"command: {common.command_line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
