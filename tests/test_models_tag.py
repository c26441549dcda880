"""``tag-realtime`` (Choi et al., the two-pathway network with TAG): shapes per task, every Table III
switch combination, the attention's contract (alpha_t per task in (0, 1), one beta, eq. 4),
hand-counted parameters, the stride the heads read, the asymmetric mode's parts, and 2-step
``mtl-train`` runs, on tiny inputs (64x128) and a narrow width (w = 8)."""

from __future__ import annotations

import csv
import itertools
import math
from pathlib import Path

import pytest
import torch
from conftest import run_mtl_train
from torch import nn

from mtl_data.errors import MtlDataError
from mtl_data.train import checkpoint as ckpt
from mtl_data.train.config import OptimConfig, ScheduleConfig
from mtl_data.train.models import create_model, list_models
from mtl_data.train.models.tag import TAGModel, TaskAdaptiveHead
from mtl_data.train.optim import build_part_optimizers
from mtl_data.train.weighting import create_weighting

SIZE = (64, 128)  # (H, W)
WIDTH = 8  # w: stages 8, 16, 32, 64, 128; detail 16; C = 32
CITYSCAPES_TASKS = ["seg", "depth", "det3d"]
SWITCHES = ("branch", "aggregation", "channel_attention", "spatial_attention")


def build(tasks=CITYSCAPES_TASKS, seed: int = 0, **options) -> TAGModel:
    torch.manual_seed(seed)
    return create_model("tag-realtime", tasks=tasks, width=options.pop("width", WIDTH), **options)


def image(batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, *SIZE, generator=torch.Generator().manual_seed(seed))


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def scalar(outputs: dict) -> torch.Tensor:
    """A loss that reaches every output tensor."""
    values = [v for out in outputs.values() for v in (out.values() if isinstance(out, dict) else [out])]
    return torch.stack([v.float().square().mean() for v in values]).sum()


# ---- registry and shapes ----------------------------------------------------------------------------


def test_the_registry_lists_tag_realtime_and_builds_a_tag_model():
    assert "tag-realtime" in list_models()
    model = build()
    assert isinstance(model, TAGModel) and list(model.heads) == CITYSCAPES_TASKS
    assert all(isinstance(h, TaskAdaptiveHead) for h in model.heads.values())


def test_each_task_gets_its_output_shape_from_h_t_at_stride_8():
    model = build()
    out = model(image())
    assert out["seg"].shape == (2, 19, *SIZE)  # the 19 Cityscapes classes, upsampled to the input
    assert out["depth"].shape == (2, 1, *SIZE) and bool((out["depth"] > 0).all())
    assert out["det3d"]["heatmap"].shape == (2, 11, 8, 16)  # unified det classes on the 1/8 grid
    assert {k: v.shape[-2:] for k, v in out["det3d"].items()} == dict.fromkeys(out["det3d"], (8, 16))
    assert model.feature_spec.strides == (8,) and model.feature_spec.channels == 4 * WIDTH
    # the tasks the model holds (and the trainer's losses use) read stride 8
    assert model.tasks["seg"].config.stride == 8 and model.tasks["det3d"].config.stride == 8


def test_every_head_the_trainer_has_runs_on_it():
    tasks = ["seg", "depth", "det2d", "det3d", "steer", "sign", "lane"]
    out = build(tasks).eval()(image(batch=1))
    assert list(out) == tasks
    assert out["lane"].shape[-2:] == SIZE and out["steer"].shape == (1,) and out["sign"].shape[0] == 1


def test_encoder_maps_are_detail_at_1_8_and_semantic_at_1_16_to_1_64():
    model = build()
    maps = model.encoder(image())
    assert [tuple(m.shape) for m in maps] == [(2, 16, 8, 16), (2, 32, 4, 8), (2, 64, 2, 4), (2, 128, 1, 2)]
    # odd sizes halve with ceil and the aggregation's upsampling follows the sizes, not 2x
    out = model(torch.randn(1, 3, 70, 130))
    assert out["seg"].shape == (1, 19, 70, 130)


# ---- switches ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("switches", list(itertools.product([True, False], repeat=4)), ids=str)
def test_every_switch_combination_builds_runs_forward_and_backward_to_every_parameter(switches):
    options = dict(zip(SWITCHES, switches, strict=True))
    model = build(**options)
    scalar(model(image())).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    # every shared parameter and every attention generator learns (det3d's pitch/roll branch starts
    # at zero weights, so its first layer's gradient is 0 at the first step: the task's choice)
    learning = [n for n, _ in model.named_parameters() if not n.startswith("heads.") or ".attention." in n]
    unreached = [n for n, p in model.named_parameters() if n in learning and not torch.any(p.grad != 0)]
    assert unreached == []
    assert (model.encoder.detail is not None) is options["branch"]
    assert (model.neck.spatial is not None) is options["spatial_attention"]
    assert all((h.attention is not None) is options["channel_attention"] for h in model.heads.values())
    assert type(model.neck.aggregation).__name__ == (
        "HierarchicalAggregation" if options["aggregation"] else "PyramidPooling"
    )


def test_switches_are_typed_options():
    with pytest.raises(MtlDataError, match="channel_attention must be a bool"):
        build(channel_attention="no")
    with pytest.raises(MtlDataError, match="known: aggregation, branch, channel_attention"):
        build(attention=False)


# ---- TAG --------------------------------------------------------------------------------------------


def head_inputs(model: TAGModel, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], object]:
    """(each task's h_t as its inner head received it, the neck's SharedFeatures) of one forward."""
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        head.head.register_forward_pre_hook(lambda _m, args, name=name: seen.__setitem__(name, args[0][0]))
        for name, head in model.heads.items()
    ]
    model(x)
    for hook in hooks:
        hook.remove()
    return seen, model.neck(model.encoder(x))


def test_alpha_t_is_per_task_in_0_1_beta_is_shared_and_h_t_is_alpha_h_plus_beta():
    model = build()  # train mode: BN normalises with the batch, as in training
    x = image()
    with torch.no_grad():
        h_t, shared = head_inputs(model, x)
        alphas = {t: model.heads[t].alpha(shared.context) for t in CITYSCAPES_TASKS}
    c = 4 * WIDTH
    assert shared.h.shape == (2, c, 8, 16) and shared.beta.shape == (2, 1, 8, 16) and shared.context.shape == (2, 128)
    assert bool(((shared.beta > 0) & (shared.beta < 1)).all())
    for t, alpha in alphas.items():
        assert alpha.shape == (2, c) and bool(((alpha > 0) & (alpha < 1)).all()), t
        torch.testing.assert_close(h_t[t], alpha[:, :, None, None] * shared.h + shared.beta)
    assert not torch.allclose(alphas["seg"], alphas["depth"]) and not torch.allclose(alphas["seg"], alphas["det3d"])
    # one spatial attention for every task: the neck has the only S_sp, the heads none
    assert sum(isinstance(m, nn.Conv2d) and m.dilation == (2, 2) for m in model.modules()) == 1


def test_without_tag_every_head_gets_the_same_h():
    model = build(channel_attention=False, spatial_attention=False).eval()
    with torch.no_grad():
        h_t, shared = head_inputs(model, image())
    assert shared.beta is None and shared.context is None
    for t in CITYSCAPES_TASKS:
        assert torch.equal(h_t[t], shared.h)


def test_without_channel_attention_alpha_is_refused_by_name():
    model = build(channel_attention=False)
    with pytest.raises(MtlDataError, match="channel_attention=false"):
        model.heads["seg"].alpha(torch.zeros(1, 128))


# ---- parameters, counted by hand -------------------------------------------------------------------


def conv(k: int, cin: int, cout: int, bias: bool = False) -> int:
    return k * k * cin * cout + (cout if bias else 0)


def bn(c: int) -> int:
    return 2 * c


def block(cin: int, cout: int, stride: int) -> int:
    """ResNet basic block: two 3x3 conv + BN, and the 1x1 conv + BN shortcut where it is needed."""
    shortcut = conv(1, cin, cout) + bn(cout) if stride != 1 or cin != cout else 0
    return conv(3, cin, cout) + bn(cout) + conv(3, cout, cout) + bn(cout) + shortcut


def stage(cin: int, cout: int, blocks: int, stride: int) -> int:
    return block(cin, cout, stride) + (blocks - 1) * block(cout, cout, 1)


def expected_parameters(w: int, c: int, tasks: int, branch=True, aggregation=True, channel=True, spatial=True) -> int:
    """Table I, eq. 1-4 and the documented choices, written out (without the task heads)."""
    encoder = conv(3, 3, w) + bn(w) + conv(3, w, w) + bn(w)  # stem
    encoder += stage(w, w, 2, 1) + stage(w, 2 * w, 3, 2)  # layer1, layer2
    encoder += stage(2 * w, 4 * w, 3, 2) + stage(4 * w, 8 * w, 3, 2) + stage(8 * w, 16 * w, 3, 2)  # layer3-5
    encoder += 3 * stage(2 * w, 2 * w, 3, 1) if branch else 0  # detail branch, x3 next to layer3, 4, 5

    def node(cx: int, cy: int, co: int) -> int:  # eq. 1: W1 on x, W2 on concat(B(W1 x), y), each conv + BN
        return conv(3, cx, co) + bn(co) + conv(3, co + cy, co) + bn(co)

    if aggregation:  # f_11 = f(x5, x4) -> 8w; f_22 = f(x4, x3) -> C; f_21 = f(f_11, f_22) -> C
        neck = node(16 * w, 8 * w, 8 * w) + node(8 * w, 4 * w, c) + node(8 * w, c, c)
    else:  # PPM: four 1x1 convs (with bias) to 16w / 4, then 3x3 conv + BN on the concatenation
        neck = 4 * conv(1, 16 * w, 4 * w, bias=True) + conv(3, 16 * w + 16 * w, c) + bn(c)
    neck += conv(1, 2 * w, c) + bn(c)  # g
    neck += conv(3, 2 * w, 1, bias=True) if spatial else 0  # S_sp
    attention = tasks * (16 * w * c + c + c * c + c) if channel else 0  # S_ch^t: two linear layers
    return encoder + neck + attention


def shared_and_attention(model: TAGModel) -> int:
    attention = sum(count(h.attention) for h in model.heads.values() if h.attention is not None)
    return count(model.encoder) + count(model.neck) + attention


@pytest.mark.parametrize("ablation", [{}, {"branch": False}, {"aggregation": False}, {"channel_attention": False}])
def test_parameters_equal_the_hand_count(ablation):
    model = build(**ablation)
    switches = {
        "branch": ablation.get("branch", True),
        "aggregation": ablation.get("aggregation", True),
        "channel": ablation.get("channel_attention", True),
    }
    assert shared_and_attention(model) == expected_parameters(WIDTH, 4 * WIDTH, 3, **switches)


def test_paper_width_layer5_alone_has_52_m_parameters_as_table_i_writes_it():
    """Table I's layer5, [3x3, 1024, /2; 3x3, 1024] x3 basic blocks, counted by hand:
    first block 9*512*1024 + 9*1024*1024 + 512*1024 (shortcut) + 3 BN * 2 * 1024 = 14,686,208;
    two more blocks 2 * (2 * 9*1024*1024 + 2 BN * 2 * 1024) = 37,756,928; together 52,443,136,
    more than the paper's whole network (33.9 M): docs/training.md "Real-time model"."""
    model = create_model("tag-realtime", tasks=[])
    assert count(model.encoder.layer5) == 52_443_136
    assert count(model.encoder) + count(model.neck) == expected_parameters(64, 256, 0)
    # the attention generators of three tasks at the paper's width: about Table II's 33.9 - 32.8 M
    tag = 3 * (1024 * 256 + 256 + 256 * 256 + 256) + 9 * 128 + 1
    assert math.isclose(tag / 1e6, 0.99, abs_tol=0.01)


# ---- the stride the heads read, options, parts -------------------------------------------------------


def test_a_stride_other_than_8_is_one_error_and_8_is_accepted():
    with pytest.raises(MtlDataError, match=r"task_options.seg.stride=8") as info:
        create_model("tag-realtime", tasks=["seg"], width=WIDTH, task_options={"seg": {"stride": 16}})
    assert "\n" not in str(info.value)
    model = create_model("tag-realtime", tasks=["seg"], width=WIDTH, task_options={"seg": {"stride": 8}})
    assert model.tasks["seg"].config.stride == 8


def test_neck_channels_set_c_and_width_scales_the_stages():
    model = build(neck_channels=24, width=4)
    assert model.neck.out_channels == 24 and model.encoder.channels == (8, 16, 32, 64)
    assert model(image())["seg"].shape == (2, 19, *SIZE)
    with pytest.raises(MtlDataError, match="width must be a positive integer"):
        build(width=0)


def test_parts_split_shared_from_heads_and_each_alpha_is_in_its_tasks_head():
    model = build()
    parts = model.parts()
    assert list(parts) == ["encoder", "neck", "heads.seg", "heads.depth", "heads.det3d"]
    ids = [id(p) for part in parts.values() for p in part.parameters()]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    for t in CITYSCAPES_TASKS:
        own = {id(p) for p in parts[f"heads.{t}"].parameters()}
        assert {id(p) for p in model.heads[t].attention.parameters()} <= own


def test_asymmetric_mode_gives_every_parameter_to_exactly_one_part_optimizer():
    model = build()
    weighting = create_weighting("equal", CITYSCAPES_TASKS)
    parts, params = build_part_optimizers(
        model, weighting, OptimConfig(), ScheduleConfig(), 10, {}, 2, CITYSCAPES_TASKS
    )
    assert set(parts.optimizers) == {"encoder", *CITYSCAPES_TASKS}
    ids = [id(p) for ps in params.values() for p in ps]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}
    alpha_seg = {id(p) for p in model.heads["seg"].attention.parameters()}
    assert alpha_seg <= {id(p) for p in params["seg"]}


# ---- mtl-train ----------------------------------------------------------------------------------------


RUN = [
    *("--model", "tag-realtime", "--tasks", "seg,depth,det3d", "--mix", "cityscapes=1"),
    *("--image-size", "64x128", "--batch-size", "2", "--workers", "0", "--steps", "2", "--log-every", "1"),
    *("--set", f"model_options.width={WIDTH}"),
]


def rows(run: Path) -> list[dict]:
    with (run / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_a_two_step_cpu_run_trains_tag_realtime_with_switches_from_the_command_line(synth_shards, tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = run_mtl_train(
        capsys, "--shards", synth_shards, "--out", run, *RUN, "--set", "model_options.spatial_attention=false"
    )
    assert code == 0, err
    assert [int(r["step"]) for r in rows(run)] == [1, 2]
    assert all(math.isfinite(float(r[f"loss/{t}"])) for r in rows(run) for t in CITYSCAPES_TASKS)
    state = ckpt.load(run / "checkpoints" / "last.pt")
    names = list(state["model"])
    assert any(n.startswith("heads.seg.attention.") for n in names)  # channel attention on
    assert not any(n.startswith("neck.spatial.") for n in names)  # spatial attention off, from --set
    assert "spatial_attention = false" in (run / "config.toml").read_text()


def test_the_asymmetric_mode_runs_with_tag_realtime(synth_shards, tmp_path, capsys):
    run = tmp_path / "asym"
    code, _, err = run_mtl_train(capsys, "--shards", synth_shards, "--out", run, *RUN, "--mode", "asymmetric")
    assert code == 0, err
    assert len(rows(run)) == 2
    model = ckpt.load(run / "checkpoints" / "last.pt")["model"]
    assert all(bool(torch.isfinite(v).all()) for v in model.values() if v.is_floating_point())
