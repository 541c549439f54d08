"""Executors: where the points of a sweep run. Each is a small frozen value with one method,
`map(jobs)`, taking {cache key: config JSON} and yielding (key, PointResult) as points finish:
`Serial()` in this process, `Local(workers)` in spawned worker processes pinned to one core each,
`Dask(workers, scheduler)` on a Dask cluster (a local one of single-threaded workers, or a running
scheduler). A point that raises, or whose worker dies, comes back as a failed PointResult; the
sweep goes on.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import sys
import time
import traceback
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from ..errors import InputError
from ..runtime import THREADS_VARIABLE, use_one_xla_thread
from .config import ExperimentConfig
from .runner import run


class PointResult(NamedTuple):
    """What running one point gave: "ok" with the point's Dataset as NetCDF bytes, or "failed" with
    the error line and its traceback; seconds of wall time either way."""

    status: str
    netcdf: bytes = b""
    error: str = ""
    traceback: str = ""
    seconds: float = 0.0


def compute_point(config_json: str) -> PointResult:
    """Run one experiment (in a worker); an exception becomes a failed result."""
    start = time.perf_counter()
    try:
        ds = run(ExperimentConfig.model_validate_json(config_json), progress=False)
        return PointResult("ok", bytes(ds.to_netcdf(engine="scipy")), seconds=time.perf_counter() - start)
    except Exception as err:  # a failed point is recorded and the sweep goes on
        error = f"{type(err).__name__}: {err}"
        return PointResult(
            "failed", error=error, traceback=traceback.format_exc(), seconds=time.perf_counter() - start
        )


def _died(err: Exception) -> PointResult:
    return PointResult("failed", error=f"worker died: {type(err).__name__}: {err}")


class Executor(Protocol):
    def map(self, jobs: dict[str, str]) -> Iterator[tuple[str, PointResult]]:
        """Run every job; yield (key, result) as each finishes."""
        ...


def _workers_option(workers) -> None:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InputError(f"--workers: must be at least 1 (got {workers})")


@dataclass(frozen=True)
class Serial:
    """Every point in this process, one after the other."""

    def map(self, jobs: dict[str, str]) -> Iterator[tuple[str, PointResult]]:
        for key, text in jobs.items():
            yield key, compute_point(text)


@dataclass(frozen=True)
class Local:
    """`workers` spawned processes (JAX does not survive fork), each pinned to one core."""

    workers: int = 1

    def __post_init__(self):
        _workers_option(self.workers)

    def map(self, jobs: dict[str, str]) -> Iterator[tuple[str, PointResult]]:
        context = multiprocessing.get_context("spawn")
        counter = context.Value("i", 0)
        affinity = getattr(os, "sched_getaffinity", None)
        cpus = sorted(affinity(0)) if affinity else list(range(self.workers))
        with ProcessPoolExecutor(
            self.workers, context, initializer=_init_local_worker, initargs=(counter, cpus)
        ) as pool:
            with _workers_with_one_xla_thread():  # the workers are spawned at the first submit
                futures = {pool.submit(compute_point, text): key for key, text in jobs.items()}
            try:
                for future in as_completed(futures):
                    try:
                        yield futures[future], future.result()
                    except Exception as err:  # the worker process died (memory, signal)
                        yield futures[future], _died(err)
            except BaseException:  # Ctrl-C, or the caller stopped: abandon the points still running
                for process in list(getattr(pool, "_processes", {}).values()):  # no public handle
                    process.terminate()
                pool.shutdown(wait=False, cancel_futures=True)
                raise


CONNECT_TIMEOUT_S = 3  # an unreachable scheduler fails after this long, with one line


@dataclass(frozen=True)
class Dask:
    """Dask distributed: on the scheduler at `scheduler`, or (None) on a LocalCluster of `workers`
    single-threaded processes pinned to one core each. `map` connects at once (an unreachable
    scheduler fails within CONNECT_TIMEOUT_S, before the sweep writes anything) and closes the client
    (and the local cluster) when its results are exhausted."""

    workers: int = 1
    scheduler: str | None = None

    def __post_init__(self):
        _workers_option(self.workers)

    def map(self, jobs: dict[str, str]) -> Iterator[tuple[str, PointResult]]:
        client, cluster = self._connect()
        return self._results(jobs, client, cluster)

    def _connect(self):
        try:  # dask is an optional extra, imported only when asked for
            from dask.distributed import Client, LocalCluster
        except ImportError:
            raise InputError(
                "--executor dask: install the dask extra (pip install 'critical-kernels[dask]')"
            ) from None
        if self.scheduler is None:
            with _workers_with_one_xla_thread():
                cluster = LocalCluster(
                    n_workers=self.workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,  # pyright: ignore[reportArgumentType]  (None: no dashboard)
                )
            client = Client(cluster)
            client.run(_pin_dask_worker)
            return client, cluster
        failure = None
        hook = sys.unraisablehook  # a Client that failed to connect complains when it is collected
        sys.unraisablehook = lambda _: None
        try:
            try:
                return Client(self.scheduler, timeout=f"{CONNECT_TIMEOUT_S}s"), None
            except Exception as err:  # OSError (timeout), ValueError (address), anything from the transport
                failure = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:200]
            gc.collect()
        finally:
            sys.unraisablehook = hook
        raise InputError(
            f"--scheduler: no Dask scheduler reachable at {self.scheduler!r} within {CONNECT_TIMEOUT_S} s "
            f"({failure}); start one (`dask scheduler`) or leave out --scheduler"
        )

    @staticmethod
    def _results(jobs: dict, client, cluster) -> Iterator[tuple[str, PointResult]]:
        from dask.distributed import as_completed as dask_completed  # optional extra: lazy, as above

        try:
            with client:
                futures = {client.submit(compute_point, text, pure=False): key for key, text in jobs.items()}
                for future in dask_completed(futures):
                    try:
                        yield futures[future], future.result()
                    except Exception as err:  # a lost worker
                        yield futures[future], _died(err)
        finally:
            if cluster is not None:
                cluster.close()


EXECUTORS = {  # the CLI's --executor names -> the executor of (--workers, --scheduler)
    "local": lambda workers, scheduler: Local(workers),
    "dask": Dask,
    "serial": lambda workers, scheduler: Serial(),
}


def executor_named(name: str, workers: int = 1, scheduler: str | None = None) -> Executor:
    """The executor the CLI's --executor, --workers and --scheduler describe (a scheduler implies dask)."""
    if name not in EXECUTORS:
        raise InputError(f"--executor: must be one of {', '.join(EXECUTORS)} (got {name!r})")
    return EXECUTORS["dask" if scheduler is not None else name](workers, scheduler)


# ------------------------------------------------------------------------- one core per worker


def pin_to_one_core(cpu: int) -> None:
    """Pin every thread of this process to one core, so XLA's thread pools use one core."""
    if not hasattr(os, "sched_setaffinity"):  # pragma: no cover - not Linux
        return
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), {cpu})
        except OSError:  # pragma: no cover - a thread that just ended
            pass


@contextmanager
def _workers_with_one_xla_thread() -> Iterator[None]:
    """Worker processes started in the body get PJRT_NPROC=1 where jaxlib needs it (runtime.py): they
    start JAX's backend while importing this module, before any hook of ours could run. This process's
    own environment is left as it was."""
    before = os.environ.get(THREADS_VARIABLE)
    use_one_xla_thread()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(THREADS_VARIABLE, None)


def _init_local_worker(counter, cpus: list[int]) -> None:
    with counter.get_lock():
        slot = counter.value
        counter.value += 1
    pin_to_one_core(cpus[slot % len(cpus)])


def _pin_dask_worker(dask_worker) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    pin_to_one_core(cpus[int(dask_worker.name) % len(cpus)])
