"""Reading the shards with other tools: Hugging Face ``datasets`` and plain ``webdataset``.

- ``to_hf_dataset`` / ``hf_features``: a ``datasets.Dataset`` (or ``IterableDataset``) of a
  split, every source mixed, with one explicit ``datasets.Features`` for the whole unified
  schema (absent tasks are None). The stock ``load_dataset("webdataset", ...)`` builder cannot
  infer features for a split whose samples carry different members; ``webdataset_features`` is
  the declaration that lets it read one anyway (docs/readers.md). Depth is the ``depth.pts``
  bytes (binary); ``depth_map`` turns them into the (H, W) uint16 map.
- ``decoders``: handlers for ``webdataset.WebDataset(urls).decode(*decoders())`` that decode the
  label maps as stored: ``depth.pts`` (schema 2) and ``depth.png`` (schema 1 shards) both to the
  (H, W) uint16 map; webdataset leaves ``depth.pts`` as bytes, and its stock image decoders
  squash a 16-bit ``depth.png`` to 8 bits.

Neither ``datasets`` nor ``webdataset`` is imported until a function needs it: webdataset imports
torch when it is installed, and so does ``datasets.IterableDataset``; this package is on the data
side, which never loads torch by itself.
"""

from mtl_data.readers.huggingface import depth_map, hf_features, to_hf_dataset, webdataset_features
from mtl_data.readers.webdataset import decoders

__all__ = ["decoders", "depth_map", "hf_features", "to_hf_dataset", "webdataset_features"]
