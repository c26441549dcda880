"""``mtl-train search --engine ray``: the trials of a generation trained in parallel as Ray tasks.

The search (``search.py``) plans one generation at a time from the trials before it, so the
trials of a generation are independent: this engine submits them all at once, each a Ray task
that runs ``search.run_trial`` (a whole training run) and asks for one GPU where the cluster has
GPUs (``gpus_per_trial``; Ray sets ``CUDA_VISIBLE_DEVICES`` so the trial's ``cuda`` is its own
GPU) and ``cpus_per_trial`` CPUs. Outcomes are recorded in trial order (``Search.record``), so
``trials.csv`` grows as with the in-process engine.

**Transfer source.** The in-process engine starts each trial from the best trial so far, the
ones of its own generation included; trials that run at the same time cannot, so here every
trial of a generation continues from the best trial *before the generation*
(``Search.record`` writes it in the csv's ``transfer_from``). That rule depends only on the
earlier generations, so a resumed search (a generation cut short included) writes the csv of an
uninterrupted one with this engine, as the in-process engine's resume does with its own rule.
The engines plan the same genomes for generation 0 and its first trial is the same run under
both; from trial 1 on their runs differ (in process, trial 1 already continues from trial 0;
here every trial of generation 0 trains from the base config's ``init_from``).

**Failures.** A trial that fails as training fails (``MtlDataError``, a non-finite loss) is
recorded with its error, as in process. A trial whose Ray worker or node died (killed for
memory, a preempted node) is recorded as failed with Ray's reason and the search goes on:
a trial is not retried by Ray (``max_retries=0``), since its run folder is half written; a
resumed search reruns only trials without a csv row. Any other exception in a trial is a bug
and stops the search, as it does in process.

The run folders (``SEARCH/trials/NNN/``) are written by the worker that trains the trial, so on
a cluster every node must see the search folder and the shards at the same paths.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

from mtl_data.raysession import ray_get, ray_session
from mtl_data.train.search import Outcome, Search, TrialSpec, best_of, run_trial

#: how the search's options name this engine in errors
OPTION = "mtl-train search --engine ray"


@dataclass
class RayEngine:
    """An ``Engine`` (``search.py``) that trains a generation's trials in parallel on Ray.

    Use it as a context manager around ``search(...)``: Ray is started (a local instance of all
    cores when ``address`` is None) or joined (``ray://HOST:10001``, ``HOST:6379``, ``auto``) on
    entry, once per search, and shut down on exit if it was started here.

    Attributes:
        address: the Ray cluster, or None for a local instance.
        cpus_per_trial: CPUs Ray reserves for each trial (its training process and loader
            workers; ``--workers`` of the trials is not changed).
        gpus_per_trial: GPUs per trial; None: 1 where the cluster has any GPU, else 0.
    """

    address: str | None = None
    cpus_per_trial: float = 1
    gpus_per_trial: float | None = None

    def __enter__(self) -> RayEngine:
        self._session = contextlib.ExitStack()  # Ray, held until ``__exit__``
        self._ray = self._session.enter_context(ray_session(self.address, None, OPTION))
        gpus = self.gpus_per_trial
        if gpus is None:
            gpus = 1 if self._ray.cluster_resources().get("GPU", 0) > 0 else 0
        self.resources = {"num_cpus": self.cpus_per_trial, "num_gpus": gpus}
        self._remote = self._ray.remote(max_retries=0, **self.resources)(run_trial)
        return self

    def __exit__(self, *exc) -> None:
        self._session.close()

    def __call__(self, specs: Sequence[TrialSpec], search: Search) -> None:
        ray = self._ray
        generation_start = search.settings.first_trial(specs[0].generation)
        source = best_of(search.records[:generation_start])  # the best before the generation
        refs = [self._remote.remote(search.trial_config(spec, source)) for spec in specs]
        try:
            for spec, ref in zip(specs, refs):
                search.record(spec, source, self._outcome(ref))
        finally:  # interrupted (or a bug in a trial): the trials still running are not waited for
            for ref in refs:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)

    def _outcome(self, ref) -> Outcome:
        lost = self._ray.exceptions
        try:
            return ray_get(self._ray, ref)
        except (lost.WorkerCrashedError, lost.NodeDiedError, lost.OutOfMemoryError) as exc:
            reason = (str(exc).strip().splitlines() or [""])[0]
            return Outcome(None, f"{type(exc).__name__}: {reason}")
