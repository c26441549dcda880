"""Deterministic validation splits that never leak a group across train and val."""

from __future__ import annotations

import hashlib


def hash_fraction(group_id: str, salt: str) -> float:
    """A stable number in [0, 1) for ``group_id`` (SHA-1 of ``salt:group_id``).

    Independent of listing order, worker count, platform and Python's hash seed.
    """
    digest = hashlib.sha1(f"{salt}:{group_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def is_val(group_id: str, fraction: float, salt: str) -> bool:
    """Whether a group (a frame, scene, track ...) goes to ``val`` for a ``--val-fraction``.

    A group is wholly in val or wholly in train. Raising the fraction only moves more groups
    into val; a group already in val stays there.
    """
    return fraction > 0 and hash_fraction(group_id, salt) < fraction


def val_groups(groups: list[str] | set[str], fraction: float, salt: str) -> set[str]:
    """Exactly ``round(fraction * len(groups))`` groups for ``val`` (at least one when fraction > 0).

    For sources with few groups (A2D2 has 23 scenes) a per-group hash threshold would give a val
    size far from the fraction asked for; here the groups with the lowest hash are taken, so the
    choice is still deterministic and independent of listing order.
    """
    groups = sorted(set(groups))
    if fraction <= 0 or not groups:
        return set()
    count = max(1, round(fraction * len(groups)))
    return set(sorted(groups, key=lambda g: hash_fraction(g, salt))[:count])
