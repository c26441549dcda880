"""mtl-data: raw driving datasets -> one sharded multi-task schema with partial labels."""

__version__ = "0.1.0"
