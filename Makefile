# Set-up, tests, demo and benchmarks. Everything runs from a local virtual environment that
# `make setup` creates; the pinned CPU build of torch goes in first, so that nothing pulls the
# multi-GB CUDA build.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
TORCH  := torch==2.13.0
DEMO   := build/demo
# a small model for a few dozen CPU steps: the demo shows the pipeline, not a result
DEMO_TRAIN := --steps 40 --image-size 64x128 --batch-size 8 --workers 2 --lr 2e-3 --set model_options.neck_channels=64

.PHONY: setup test lint demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[train,dev,plots]'
	touch $(STAMP)

# Two test processes on two cores: one torch thread each (OMP_NUM_THREADS=1), or each process's
# torch pool takes every core and they fight (the suite then takes ~1.5x as long).
test: setup lint
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2

# Lint and format checks (config: [tool.ruff] in pyproject.toml); `ruff format src tests bench` fixes the format.
lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

demo: setup
	rm -rf $(DEMO)
	$(BIN)/mtl-data synth kitti --to $(DEMO)/raw/kitti
	$(BIN)/mtl-data ingest kitti $(DEMO)/raw/kitti --to $(DEMO)/shards --val-fraction 0.25 --workers 2 --prev-frames 2
	$(BIN)/mtl-data synth a2d2 --to $(DEMO)/raw/a2d2
	$(BIN)/mtl-data ingest a2d2 $(DEMO)/raw/a2d2 --to $(DEMO)/shards --val-fraction 0.34 --workers 2
	$(BIN)/mtl-data synth gtsrb --to $(DEMO)/raw/gtsrb
	$(BIN)/mtl-data ingest gtsrb $(DEMO)/raw/gtsrb --to $(DEMO)/shards --val-fraction 0.34 --workers 2
	$(BIN)/mtl-data synth tusimple --to $(DEMO)/raw/tusimple
	$(BIN)/mtl-data ingest tusimple $(DEMO)/raw/tusimple --to $(DEMO)/shards --val-fraction 0.34 --workers 2 --prev-frames 2
	$(BIN)/mtl-data synth cityscapes --to $(DEMO)/raw/cityscapes
	$(BIN)/mtl-data ingest cityscapes $(DEMO)/raw/cityscapes --to $(DEMO)/shards --workers 2 --prev-frames 2
	$(BIN)/mtl-data inspect $(DEMO)/shards
	$(BIN)/mtl-data inspect $(DEMO)/shards --key kitti_train_000001 --pictures $(DEMO)/pictures
	$(BIN)/mtl-data inspect $(DEMO)/shards --key $$($(BIN)/python -c "import polars as pl; \
	    print(pl.read_parquet('$(DEMO)/shards/a2d2/manifest.parquet').filter(pl.col('has_det3d') & pl.col('has_steer'))['key'][0])")
	$(BIN)/mtl-data validate $(DEMO)/shards
	$(BIN)/mtl-data stats $(DEMO)/shards --json $(DEMO)/stats.json --plots $(DEMO)/plots
	$(BIN)/mtl-data batches $(DEMO)/shards --mix '$(DEMO)/stats.json#0.5' --batches 2 --workers 2
	$(BIN)/mtl-data batches $(DEMO)/shards --split val --eval --batch-size 16 --batches 1 --letterbox
	$(BIN)/mtl-data reshard $(DEMO)/shards --max-side 128 --to $(DEMO)/shards_128 --workers 2
	$(BIN)/mtl-data batches $(DEMO)/shards_128 --batches 1 --workers 2 --letterbox
	$(BIN)/mtl-train models
	$(BIN)/mtl-train --shards $(DEMO)/shards --stats $(DEMO)/stats.json --out $(DEMO)/runs/mtl $(DEMO_TRAIN) --eval-every 20
	$(BIN)/mtl-train --shards $(DEMO)/shards --out $(DEMO)/runs/stl_seg --mode stl --tasks seg $(DEMO_TRAIN)
	$(BIN)/mtl-train eval $(DEMO)/runs/mtl --stl $(DEMO)/runs/stl_seg
	$(BIN)/mtl-train predict $(DEMO)/runs/mtl --out $(DEMO)/predictions
	$(BIN)/mtl-train score $(DEMO)/shards --split val --predictions $(DEMO)/predictions --json $(DEMO)/scores.json
	$(BIN)/mtl-train report $(DEMO)/runs/mtl $(DEMO)/runs/stl_seg
	$(BIN)/mtl-train --shards $(DEMO)/shards --stats $(DEMO)/stats.json --out $(DEMO)/runs/mtl_uncertainty $(DEMO_TRAIN) --weighting uncertainty
	$(BIN)/mtl-train report --layout leang $(DEMO)/runs/mtl $(DEMO)/runs/mtl_uncertainty
	$(BIN)/mtl-train --shards $(DEMO)/shards --out $(DEMO)/runs/two_frame --frames 2 $(DEMO_TRAIN)
	$(BIN)/mtl-train predict $(DEMO)/runs/two_frame --video $(DEMO)/raw/cityscapes/leftImg8bit_sequence/train/aachen --out $(DEMO)/video

bench: setup
	$(BIN)/python bench/ingest_kitti.py
	$(BIN)/python bench/ingest_a2d2.py
	$(BIN)/python bench/ingest_gtsrb.py
	$(BIN)/python bench/ingest_tusimple.py
	$(BIN)/python bench/ingest_cityscapes.py
	$(BIN)/python bench/ingest_ray.py
	$(BIN)/python bench/stats.py
	$(BIN)/python bench/loader.py
	$(BIN)/python bench/jpeg.py
	$(BIN)/python bench/models.py
	$(BIN)/python bench/tag.py
	$(BIN)/python bench/frames.py
	$(BIN)/python bench/trainer.py
	$(BIN)/python bench/weighting.py
	$(BIN)/python bench/datawait.py

clean:
	rm -rf build $(VENV)
