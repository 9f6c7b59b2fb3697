"""Where Dask runs: a local cluster, a running scheduler, SLURM, or GPU workers.

:func:`make_client` turns a :class:`~lptem_dask.config.ClusterConfig` into a
connected :class:`distributed.Client`. The default is a LocalCluster of worker
processes on this machine with the dashboard bound to 127.0.0.1; nothing needs
to be started by hand. Listeners bind to 127.0.0.1 unless the config names
another interface.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import dask

from .config import ClusterConfig
from .errors import ClusterError, require

if TYPE_CHECKING:  # pragma: no cover
    from distributed import Client

__all__ = ["make_client", "make_cluster", "slurm_job_script", "dashboard_link"]

logger = logging.getLogger(__name__)


def _local_kwargs(config: ClusterConfig) -> dict[str, Any]:
    ncpu = os.cpu_count() or 1
    n_workers = config.n_workers or max(1, ncpu // 2)
    threads = config.threads_per_worker or max(1, ncpu // n_workers)
    return dict(
        n_workers=n_workers,
        threads_per_worker=threads,
        processes=True,
        memory_limit=config.memory_limit,
        host="127.0.0.1",
        dashboard_address=f"{config.dashboard_host}:{config.dashboard_port}",
    )


def _slurm_cluster(config: ClusterConfig):
    jq = require("dask_jobqueue", "cluster", "a SLURM cluster (cluster.kind: slurm)")
    return jq.SLURMCluster(
        queue=config.queue,
        account=config.account,
        cores=config.cores,
        memory=config.memory,
        walltime=config.walltime,
        job_extra_directives=list(config.job_extra_directives),
        job_script_prologue=list(config.job_script_prologue),
        local_directory=config.local_directory,
        scheduler_options={"dashboard_address": f"{config.dashboard_host}:{config.dashboard_port}"},
    )


def slurm_job_script(config: ClusterConfig) -> str:
    """The SLURM batch script dask-jobqueue would submit for ``config`` (nothing is submitted)."""
    cluster = _slurm_cluster(config)
    try:
        return cluster.job_script()
    finally:
        cluster.close()


def _cuda_cluster(config: ClusterConfig):
    try:
        import torch

        n_gpu = torch.cuda.device_count()
    except Exception:  # pragma: no cover
        n_gpu = 0
    if n_gpu == 0:
        raise ClusterError(
            "cluster.kind is 'cuda' but no CUDA GPU is visible on this machine; "
            "use cluster.kind: local to run on CPU, or run on a machine with NVIDIA GPUs"
        )
    dask_cuda = require("dask_cuda", "gpu", "GPU workers (cluster.kind: cuda)")
    return dask_cuda.LocalCUDACluster(
        CUDA_VISIBLE_DEVICES=config.cuda_visible_devices,
        host="127.0.0.1",
        dashboard_address=f"{config.dashboard_host}:{config.dashboard_port}",
        memory_limit=config.memory_limit,
    )


# Dask's nannies start workers with MALLOC_TRIM_THRESHOLD_=65536 (to hand freed
# memory back to the OS). Setting it turns off glibc's dynamic mmap threshold, so
# every large tensor of a U-Net forward pass is a fresh mmap that page-faults:
# measured here, 316 ms per 512 px frame in a worker against 220 ms without it
# (the same chunk task, alone on the worker). Workers this package starts run
# without it; the memory benchmark (benchmarks/bench_pipeline_memory.py) checks the cost.
WORKER_ENV_CONFIG = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}


def make_cluster(config: ClusterConfig | None = None):
    """Start the cluster object described by ``config`` (not for ``address``)."""
    config = config or ClusterConfig()
    if config.kind == "local":
        from distributed import LocalCluster

        with dask.config.set(WORKER_ENV_CONFIG):
            return LocalCluster(**_local_kwargs(config))
    if config.kind == "slurm":
        cluster = _slurm_cluster(config)
        cluster.scale(jobs=config.jobs)
        return cluster
    if config.kind == "cuda":
        with dask.config.set(WORKER_ENV_CONFIG):
            return _cuda_cluster(config)
    raise ClusterError(f"cluster.kind {config.kind!r} has no cluster object to start")


def make_client(config: ClusterConfig | None = None) -> Client:
    """Connect a Dask client as ``config`` says.

    Parameters
    ----------
    config : ClusterConfig, optional
        ``kind="local"`` (default) starts a LocalCluster of processes;
        ``"address"`` connects to ``config.address``; ``"slurm"`` starts a
        dask-jobqueue SLURMCluster and scales it to ``jobs``; ``"cuda"`` starts
        a dask-cuda LocalCUDACluster; ``"synchronous"`` is a LocalCluster of one
        in-process worker, for debugging.

    Returns
    -------
    distributed.Client
        Close it (or use it as a context manager) when done; closing also
        closes a cluster this function started.

    Raises
    ------
    ClusterError
        If the scheduler cannot be reached or the cluster cannot start.
    MissingDependencyError
        If ``slurm`` or ``cuda`` is asked for without its extra installed.
    """
    from distributed import Client, LocalCluster

    config = config or ClusterConfig()
    if config.kind == "address":
        if not config.address:
            raise ClusterError(
                "cluster.kind is 'address' but `cluster.address` is empty; "
                "give the scheduler address, e.g. tcp://10.0.0.5:8786"
            )
        try:
            client = Client(config.address, timeout="10s")
        except OSError as exc:
            raise ClusterError(
                f"cannot reach the Dask scheduler at {config.address!r} ({exc}); "
                "check that it is running and the address is right"
            ) from None
    elif config.kind == "synchronous":
        cluster = LocalCluster(
            n_workers=1,
            threads_per_worker=config.threads_per_worker or 1,
            processes=False,
            host="127.0.0.1",
            dashboard_address=f"{config.dashboard_host}:{config.dashboard_port}",
        )
        client = Client(cluster, set_as_default=True)
        client._lptem_owns_cluster = True  # type: ignore[attr-defined]
    else:
        try:
            cluster = make_cluster(config)
        except (ClusterError, ImportError):
            raise
        except Exception as exc:
            raise ClusterError(f"cannot start a {config.kind} Dask cluster: {exc}") from exc
        client = Client(cluster)
    logger.info("Dask dashboard: %s", dashboard_link(client))
    return client


def dashboard_link(client: Client) -> str:
    """The dashboard URL of ``client`` (empty string when there is none)."""
    try:
        return str(client.dashboard_link)
    except Exception:  # pragma: no cover
        return ""
