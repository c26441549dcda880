#!/usr/bin/env bash
# Choi et al. 2024 (TAG) on Cityscapes-3D: Table II and Table III, measured here.
#
#   RAW=/data/cityscapes bash configs/cityscapes3d/recipe.sh
#
# Steps: ingest Cityscapes(-3D) into its own shards root; train every row (one TOML each in this
# folder: three single-task baselines, the full model, "w/o TAG" and the four ablations); evaluate
# the multi-task rows against the single-task ones (--stl); measure each run's frames/s at batch 1
# (mtl-train speed); print both tables. docs/recipes.md explains every setting and decision.
#
# Environment (all optional but RAW):
#   RAW         the Cityscapes download (leftImg8bit/, gtFine/, disparity/, camera/, gtBbox3d/)
#   SHARDS      the shards root to create         [shards/cityscapes3d]
#   RUNS        where the run folders go          [runs/tag]
#   ROWS        the rows to run, by config name   [every row, STL first]
#   INGEST_ARGS mtl-data ingest options           [--image-format png: the images as the benchmark ships them]
#   TRAIN_ARGS  extra mtl-train options for every row, e.g. "--precision bf16" or, for a smoke
#               test, "--steps 2 --image-size 64x128 --set eval.every=0"
#   SPEED_ARGS  mtl-train speed options           [--precision fp32]
#   DRY_RUN     non-empty: print the commands (one per line, shell-quoted) instead of running them
#
# A row whose run folder exists is refused by mtl-train (continue an interrupted row with
# `mtl-train --resume $RUNS/<row>`, then re-run this script with ROWS naming the rows left).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RAW=${RAW:?set RAW to the Cityscapes download (leftImg8bit/, gtFine/, disparity/, camera/, gtBbox3d/)}
SHARDS=${SHARDS:-shards/cityscapes3d}
RUNS=${RUNS:-runs/tag}
ROWS=${ROWS:-stl_seg stl_depth stl_det3d tag_full tag_no_tag tag_no_branch tag_no_aggregation tag_no_channel_attention tag_no_spatial_attention}
read -r -a ingest_args <<<"${INGEST_ARGS:---image-format png}"
read -r -a train_args <<<"${TRAIN_ARGS:-}"
read -r -a speed_args <<<"${SPEED_ARGS:---precision fp32}"
read -r -a rows <<<"$ROWS"

run() {
    if [[ -n "${DRY_RUN:-}" ]]; then
        printf '%q ' "$@"
        printf '\n'
    else
        "$@"
    fi
}

for row in "${rows[@]}"; do
    [[ -f "$here/$row.toml" ]] || { echo "recipe: no config $here/$row.toml" >&2; exit 2; }
done

# ---- data: Cityscapes + Cityscapes-3D boxes -> shards (a second run leaves complete splits alone)
run mtl-data ingest cityscapes "$RAW" --to "$SHARDS" "${ingest_args[@]}"

# ---- train every row (each run ends with an evaluation on val: RUN/eval.json)
for row in "${rows[@]}"; do
    run mtl-train --config "$here/$row.toml" --shards "$SHARDS" --out "$RUNS/$row" "${train_args[@]}"
done

# ---- evaluate the multi-task rows against the single-task ones (Delta_T in eval.json)
stl=()
for row in "${rows[@]}"; do
    [[ $row == stl_* ]] && stl+=(--stl "$RUNS/$row")
done
for row in "${rows[@]}"; do
    [[ $row == stl_* ]] || run mtl-train eval "$RUNS/$row" "${stl[@]}"
done

# ---- frames/s of every run at batch 1 (RUN/speed.json), one process: one warm device
runs=()
for row in "${rows[@]}"; do runs+=("$RUNS/$row"); done
run mtl-train speed "${runs[@]}" "${speed_args[@]}"

# ---- the two tables (and the rows behind them as JSON)
run mtl-train report --layout tag "${runs[@]}" --json "$RUNS/report.json"
run mtl-train report --layout tag-ablation "${runs[@]}"
