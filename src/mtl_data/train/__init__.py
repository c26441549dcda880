"""Training side (torch): the streaming loader, its transforms and its target encoding.

``data.build_loader`` streams shards into batches of design.md section 6 (mixed sources,
partial labels, DDP-correct evaluation); ``transforms`` (numpy + OpenCV) resizes / letterboxes,
flips and jitters a ``Sample`` with every label following; ``targets`` turns transformed
samples into the fixed-shape batch; ``decode`` reads tar members with explicit handlers;
``mixing`` resolves per-source sampling ratios.
"""
