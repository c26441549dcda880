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
import socket
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
    if started and address is not None:
        _check_reachable(address, option)
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


#: seconds to wait for a TCP connection to a cluster's address before saying it is unreachable
#: (Ray itself retries an unreachable address for minutes)
CONNECT_TIMEOUT_S = 10.0


def _check_reachable(address: str, option: str) -> None:
    """Raise MtlDataError at once when ``address`` (``ray://HOST:PORT`` or ``HOST:PORT``; ``auto``
    and other forms are left to Ray) does not accept a TCP connection within ``CONNECT_TIMEOUT_S``."""
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or type(exc).__name__)
        raise MtlDataError(
            f"{option}: cannot reach the Ray cluster at {address} ({reason}): is it running there "
            "(`ray status` on its head node), and is the port the head's (ray://HOST:10001 for a client, "
            "HOST:6379 on a node of the cluster)?"
        ) from None


def ray_get(ray, ref):
    """``ray.get(ref)``, with an exception raised in the task re-raised as itself."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        raise (exc.cause if isinstance(exc.cause, BaseException) else exc) from None
