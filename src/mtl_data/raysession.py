"""Ray, the optional engine of ``ingest --engine ray`` and ``mtl-train search --engine ray``.

Ray is an extra (``pip install 'mtl-data[ray]'``); nothing here imports it at module level, so
the rest of the package works without it. One convention for every command that uses it: a run
starts a local Ray instance (or joins the cluster at ``address``) when none is running in this
process, and shuts Ray down at its end only if it started it; a task's exception comes back as
itself, not in Ray's ``RayTaskError`` wrapper.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from mtl_data.errors import MtlDataError

RAY_MISSING = "{option} needs Ray, which is not installed: pip install 'mtl-data[ray]'"


def import_ray(option: str = "--engine ray"):
    """The ``ray`` module; MtlDataError saying how to install it when it is not installed."""
    try:
        import ray
    except ImportError:
        raise MtlDataError(RAY_MISSING.format(option=option)) from None
    return ray


@contextlib.contextmanager
def ray_session(address: str | None, num_cpus: int | None, option: str = "--engine ray") -> Iterator:
    """Yield the ``ray`` module with Ray running: the one this process already runs, else a
    local instance of ``num_cpus`` CPUs (None: all) when ``address`` is None, else the cluster
    at ``address`` (``ray://HOST:10001``, ``HOST:6379``, ``auto``). Ray is shut down on exit only
    if it was started here.

    Raises:
        MtlDataError: Ray is not installed, or cannot be started or joined (Ray's own reason, one
            line).
    """
    ray = import_ray(option)
    started = not ray.is_initialized()
    if started:
        local = {"num_cpus": num_cpus} if address is None and num_cpus is not None else {}
        try:
            ray.init(
                address=address,
                include_dashboard=False,
                logging_level=logging.ERROR,
                log_to_driver=False,
                ignore_reinit_error=True,
                **local,
            )
        except Exception as exc:  # Ray's own errors (ConnectionError, ValueError, ...): one line
            where = "a local Ray instance" if address is None else f"the Ray cluster {address}"
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise MtlDataError(f"{option}: cannot start or join {where}: {reason}") from None
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def ray_get(ray, ref):
    """``ray.get(ref)``, with an exception raised in the task re-raised as itself."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        raise (exc.cause if isinstance(exc.cause, BaseException) else exc) from None
