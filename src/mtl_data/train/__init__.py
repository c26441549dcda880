"""Training side (torch): the trainer's library.

``data`` streams shards into batches (the loader); ``models`` builds networks by name (a
registry of encoders, necks and the multi-task model); ``tasks`` holds one module per task
(its head, loss, metric, prediction decoding and export); ``score`` checks any model's
exported predictions against the shards. Layout and design: docs/training.md.
"""
