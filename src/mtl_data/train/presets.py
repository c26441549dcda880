"""Named starting points for ``mtl-train --preset NAME``: dotted config values applied on the
defaults, before a ``--config`` file, the options and ``--set`` (which all override them).

``thesis``: the asymmetric multi-task configuration of the Tartu thesis ("Asymmetric deep
multi-task learning", the reference code this project started from, section 3.5): A2D2's four
tasks (segmentation, depth, 2D boxes, steering) on a ResNet-50 + BiFPN network, asymmetric
updates with the effective batches it reports (encoder 48, steering 24, segmentation 32, 2D
boxes 16, depth 16 labelled samples). The thesis gives no learning-rate values ("the same
learning rate value is initially assigned for all network parts and tuned"), so every part
keeps ``optim.lr``; it loaded one sample per step, here samples come in batches of 16 (each k
must be at least the global batch: on two processes use ``--batch-size 8``).
"""

from __future__ import annotations

from collections.abc import Mapping

#: preset name -> dotted config key -> value.
PRESETS: dict[str, Mapping[str, object]] = {
    "thesis": {
        "tasks": ("seg", "depth", "det2d", "steer"),
        "mode": "asymmetric",
        "model": "resnet50-bifpn",
        "loader.mix": {"a2d2": 1.0},
        "loader.batch_size": 16,
        "asymmetric.k": {"encoder": 48, "steer": 24, "seg": 32, "det2d": 16, "depth": 16},
    },
}
