"""The streaming loader: shards -> multi-task batches (design.md section 6).

``loader.build_loader`` (or ``build_loader(shards, LoaderConfig(...))``) assembles the pipeline
of ``stages`` per worker; ``decode`` reads tar members with explicit handlers; ``transforms``
(numpy + OpenCV) resizes / letterboxes, flips and jitters a ``Sample`` with every label
following; ``targets`` turns transformed samples into the fixed-shape batch; ``mixing``
resolves per-source sampling ratios.
"""

from mtl_data.train.data.loader import Loader, LoaderConfig, build_loader

__all__ = ["Loader", "LoaderConfig", "build_loader"]
