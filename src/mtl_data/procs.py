"""Process settings shared by every pool of worker processes (ingest workers, loader workers).

A neutral module: the ingest engine and the training loader both build on it, so neither has
to import the other (the data side never imports ``train``; ``train`` need not import ``ingest``).
"""

from __future__ import annotations

import ctypes
import os

import cv2


def usable_cpus() -> int:
    """The CPU cores this process may run on (its affinity mask; ``os.cpu_count()`` elsewhere)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def tune_worker_process() -> None:
    """Settings for a process that decodes or encodes frames (an ingest or loader worker).

    * OpenCV's own thread pool is limited to one thread: one worker = one core, or workers
      oversubscribe the machine.
    * glibc's malloc returns large freed buffers (decoded images, depth maps: ~20 MB per frame)
      to the kernel and page-faults them back in for the next frame: ~7 ms per KITTI frame
      (BENCHMARKS.md).
      Raising its mmap and trim thresholds keeps them in the process for reuse; the heap stays
      bounded by the working set of one frame. Elsewhere than glibc this is a no-op.
    """
    cv2.setNumThreads(1)
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    libc.mallopt(m_mmap_threshold, 64 * 2**20)
    libc.mallopt(m_trim_threshold, 256 * 2**20)
