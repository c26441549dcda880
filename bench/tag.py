"""``tag-realtime`` against Choi et al.'s Table II: parameters and GFLOPs at 1024x2048 with the three
Cityscapes-3D tasks, per part and per Table III ablation, and the CPU forward time at 512x1024.

What is measured, and why: the paper reports 33.9 M parameters and 219 GFLOPs for its network
with TAG and 32.8 M / 218 without (Table II, 1024x2048, seg + depth + det3d heads); the model
here follows its Table I where the table is explicit (``train/models/tag.py``), and this script
shows where the counts land and which parts make the difference (docs/training.md, "Real-time
model (tag-realtime)").

1. **Models**: ``create_model("tag-realtime", ["seg", "depth", "det3d"])`` with the 19 Cityscapes
   classes for seg and the Cityscapes-3D box classes (``class_map("det", "cityscapes", "native")``,
   8) for det3d; heads at Table I's width (3x3 conv of 256: ``seg.hidden``, ``depth.hidden``,
   ``det3d.head_channels`` = 256) and, for comparison, at the project's defaults (128, 64, 64).
2. **Parameters** counted from the modules; **GFLOPs** of one forward at batch 1 counted by
   ``torch.utils.flop_counter.FlopCounterMode`` as ``bench/models.py`` counts them (convolutions
   and matrix products, a multiply-add = 2 FLOPs: GMACs = GFLOPs / 2; the paper's "GFLOPs" are
   multiply-adds, as the DDRNet and PIDNet figures it quotes are). Counted on PyTorch's ``meta``
   device: shapes only, so 1024x2048 costs no arithmetic (``--tiny`` counts on the CPU, where
   64x128 costs less than meta's Python reference paths).
3. **CPU forward**, ms per image at ``--time-size`` (default 512x1024), batch 1, eval,
   ``torch.no_grad``, one thread: process CPU time (``common.measure``) after one warm-up, best of
   ``--repeats``, interleaved repeat by repeat with the **floor**, a 1024x1024 fp32 ``torch.mm``
   doing as many FLOPs as the forward (``model / floor`` is the share of the core's matmul
   throughput the network reaches).

Prints tables and never asserts. ``--tiny`` (64x128 for everything, w = 16, one repeat) is for
the tests.

Run: ``.venv/bin/python bench/tag.py`` (from the repository root).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/common.py, bench/models.py
import common  # noqa: E402
from models import MM_SIDE, count_flops  # noqa: E402

from mtl_data.schema.taxonomy import SEG_CLASSES, class_map  # noqa: E402
from mtl_data.train.models import MultiTaskModel, create_model  # noqa: E402

TASKS = ["seg", "depth", "det3d"]
#: Table II (Choi et al.): (parameters M, GFLOPs at 1024x2048) of the network with and without TAG.
PAPER = {"tag": (33.9, 219.0), "no_tag": (32.8, 218.0)}
#: Table I's head: [3x3, 256; 1x1, C_t] per task (per det3d output).
PAPER_HEADS = {"seg": {"hidden": 256}, "depth": {"hidden": 256}, "det3d": {"head_channels": 256}}
NO_TAG = {"channel_attention": False, "spatial_attention": False}
#: the rows of the ablation table: Table III's rows, each removing or replacing one element.
ABLATIONS = {
    "ours (TAG)": {},
    "w/o TAG (Table II)": NO_TAG,
    "w/o branch": {"branch": False},
    "agg -> PPM": {"aggregation": False},
    "w/o alpha_t": {"channel_attention": False},
    "w/o beta": {"spatial_attention": False},
}


def build(options: dict[str, Any], heads: dict | None, width: int, device: str = "cpu") -> MultiTaskModel:
    classes = {"seg": list(SEG_CLASSES), "det3d": list(class_map("det", "cityscapes", "native").names)}
    torch.manual_seed(0)
    with torch.device(device):
        model = create_model("tag-realtime", TASKS, classes=classes, task_options=heads, width=width, **options)
    return model.eval()


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def forward_flops(model: MultiTaskModel, size: tuple[int, int]) -> tuple[float, dict[str, dict]]:
    """GFLOPs of one forward at batch 1 (and the counter's per-module table), on the model's device."""
    image = torch.empty(1, 3, *size, device=next(model.parameters()).device)
    with torch.no_grad():
        counter = count_flops(lambda: model(image))
    return counter.get_total_flops() / 1e9, counter.get_flop_counts()


def parts(model: MultiTaskModel, per_module: dict[str, dict]) -> dict[str, tuple[int, float]]:
    """(parameters, GFLOPs) of each part of the network, Table I's rows."""
    enc, neck = model.encoder, model.neck
    groups: dict[str, list[str]] = {
        "stem + layer1 + layer2": ["encoder.stem", "encoder.layer1", "encoder.layer2"],
        "layer3 (4w, 1/16)": ["encoder.layer3"],
        "layer4 (8w, 1/32)": ["encoder.layer4"],
        "layer5 (16w, 1/64)": ["encoder.layer5"],
        "detail branch (2w, 1/8)": ["encoder.detail"] if enc.detail is not None else [],
        "aggregation (decode layers)": ["neck.aggregation"],
        "g + S_sp": ["neck.project"] + (["neck.spatial"] if neck.spatial is not None else []),
        "S_ch^t (3 tasks)": [f"heads.{t}.attention" for t in TASKS if model.heads[t].attention is not None],
        **{f"head {t}": [f"heads.{t}.head"] for t in TASKS},
    }
    root = type(model).__name__
    out = {}
    for label, names in groups.items():
        params = sum(count(model.get_submodule(n)) for n in names)
        flops = sum(sum(per_module.get(f"{root}.{n}", {}).values()) for n in names)
        out[label] = (params, flops / 1e9)
    return out


def cpu_forward(model: MultiTaskModel, size: tuple[int, int], repeats: int) -> dict[str, float]:
    """CPU ms per image of a forward at batch 1 (eval, no_grad, one thread) and of its matmul floor."""
    image = torch.randn(1, 3, *size)  # (1, 3, H, W)

    def forward() -> None:
        with torch.no_grad():
            model(image)

    forward()  # warm-up: allocator, first-call paths
    flops = count_flops(forward).get_total_flops()
    a, b = torch.randn(MM_SIDE, MM_SIDE), torch.randn(MM_SIDE, MM_SIDE)
    reps = max(1, round(flops / (2 * MM_SIDE**3)))

    def floor() -> None:
        for _ in range(reps):
            torch.mm(a, b)

    floors, runs = [], []
    for _ in range(repeats):
        floors.append(common.measure(floor))
        runs.append(common.measure(forward))
    floor_ms = 1000 * common.best(floors).cpu * flops / (reps * 2 * MM_SIDE**3)
    return {"ms": 1000 * common.best(runs).cpu, "floor_ms": floor_ms, "gflops": flops / 1e9}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=common.parse_size, default=None, help="H x W of the counts (default 1024x2048)")
    ap.add_argument("--time-size", type=common.parse_size, default=None, help="H x W of the timing (default 512x1024)")
    ap.add_argument("--repeats", type=int, default=None, help="timing repeats, best reported (default 3; --tiny 1)")
    ap.add_argument("--width", type=int, default=None, help="w, the stem's channels (default 64; --tiny 16)")
    ap.add_argument("--tiny", action="store_true", help="64x128 for everything, w = 16, one repeat: a quick check")
    args = ap.parse_args()
    width = args.width or (16 if args.tiny else 64)
    count_device = "cpu" if args.tiny else "meta"
    size = args.size or ((64, 128) if args.tiny else (1024, 2048))
    time_size = args.time_size or ((64, 128) if args.tiny else (512, 1024))
    repeats = args.repeats or (1 if args.tiny else 3)
    torch.set_num_threads(1)

    print(
        f"\ntag-realtime (Choi et al.), w = {width}, with seg (19 classes), depth, det3d (8 Cityscapes-3D "
        f"classes); torch {torch.__version__}"
    )
    print(
        f"counts at {size[0]}x{size[1]}, batch 1: parameters from the modules; GFLOPs by torch.utils.flop_counter."
        "FlopCounterMode (convolutions and matrix products; a multiply-add counts as 2 FLOPs, so GMACs = GFLOPs / 2; "
        "the paper's GFLOPs are multiply-adds)"
    )

    # ---- against Table II
    print(f"\n{'model':<22}{'heads':<10}{'params M':>10}{'GFLOPs':>9}{'GMACs':>8}{'paper M':>9}{'paper GFLOPs':>14}")
    table: dict[str, tuple[float, float]] = {}
    for key, options in (("tag", {}), ("no_tag", NO_TAG)):
        for heads_label, heads in (("Table I", PAPER_HEADS), ("project", None)):
            model = build(options, heads, width, device=count_device)
            gflops, per_module = forward_flops(model, size)
            params = count(model) / 1e6
            table[f"{key}/{heads_label}"] = (params, gflops)
            label = "ours (TAG)" if key == "tag" else "ours (w/o TAG)"
            paper_m, paper_g = PAPER[key]
            print(
                f"{label:<22}{heads_label:<10}{params:>10.2f}{gflops:>9.1f}{gflops / 2:>8.1f}"
                f"{paper_m:>9.1f}{paper_g:>14.0f}"
            )
            if key == "tag" and heads is PAPER_HEADS:
                breakdown = parts(model, per_module)
    params, gflops = table["tag/Table I"]
    print(f"  tag-realtime / paper, parameters  {params / PAPER['tag'][0]:.2f}")
    print(f"  tag-realtime / paper, GMACs       {gflops / 2 / PAPER['tag'][1]:.2f}")
    tag_m = table["tag/Table I"][0] - table["no_tag/Table I"][0]
    print(f"  TAG adds {tag_m:.3f} M parameters (paper: {PAPER['tag'][0] - PAPER['no_tag'][0]:.1f} M)")

    print(f"\nPer part, ours (TAG) with Table I's heads: parameters M / GFLOPs at {size[0]}x{size[1]}")
    for label, (n, g) in breakdown.items():
        print(f"  {label:<30}{n / 1e6:>9.3f}{g:>10.1f}")

    print(f"\nTable III's rows (Table I's heads): parameters M / GFLOPs at {size[0]}x{size[1]}")
    for label, options in ABLATIONS.items():
        model = build(options, PAPER_HEADS, width, device=count_device)
        gflops, _ = forward_flops(model, size)
        print(f"  {label:<22}{count(model) / 1e6:>9.2f}{gflops:>10.1f}")

    # ---- CPU forward
    h, w = time_size
    print(
        f"\nCPU forward at {h}x{w}, batch 1, eval, no_grad, {torch.get_num_threads()} thread: process CPU time "
        f"(time.process_time), best of {repeats} after 1 warm-up; floor: torch.mm {MM_SIDE}x{MM_SIDE} fp32 doing "
        "the forward's FLOPs, interleaved with it"
    )
    print(f"  {'model':<22}{'GFLOPs':>9}{'forward ms':>12}{'floor ms':>10}{'model / floor':>15}")
    for label, options in (("ours (TAG)", {}), ("ours (w/o TAG)", NO_TAG)):
        res = cpu_forward(build(options, PAPER_HEADS, width), time_size, repeats)
        print(
            f"  {label:<22}{res['gflops']:>9.1f}{res['ms']:>12.0f}{res['floor_ms']:>10.0f}"
            f"{res['floor_ms'] / res['ms']:>15.2f}"
        )
    print(f"command: {common.command_line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
