"""Reading the shards with other tools: Hugging Face ``datasets`` and plain ``webdataset``.

- ``to_hf_dataset`` / ``hf_features``: a ``datasets.Dataset`` (or ``IterableDataset``) of a
  split, every source mixed, with one explicit ``datasets.Features`` for the whole unified
  schema (absent tasks are None). The stock ``load_dataset("webdataset", ...)`` builder cannot
  infer features for a split whose samples carry different members; ``webdataset_features`` is
  the declaration that lets it read one anyway (docs/readers.md).
- ``decoders``: handlers for ``webdataset.WebDataset(urls).decode(*decoders())`` that decode the
  label PNGs as stored (``depth.png`` uint16); webdataset's stock image decoders squash 16-bit
  depth to 8 bits.

Neither ``datasets`` nor ``webdataset`` is imported until a function needs it: webdataset imports
torch when it is installed, and so does ``datasets.IterableDataset``; this package is on the data
side, which never loads torch by itself.
"""

from mtl_data.readers.huggingface import hf_features, to_hf_dataset, webdataset_features
from mtl_data.readers.webdataset import decoders

__all__ = ["decoders", "hf_features", "to_hf_dataset", "webdataset_features"]
