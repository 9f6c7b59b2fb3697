import os

import pytest

from lptem_dask.cluster import make_client, slurm_job_script
from lptem_dask.config import ClusterConfig
from lptem_dask.errors import ClusterError, LptemError


def test_local_cluster_runs_and_binds_loopback():
    cfg = ClusterConfig(n_workers=1, threads_per_worker=1, dashboard_port=0)
    with make_client(cfg) as client:
        assert client.submit(lambda x: x + 1, 41).result() == 42
        assert client.dashboard_link.startswith("http://127.0.0.1:")
        for addr in client.scheduler_info()["workers"]:
            assert addr.startswith("tcp://127.0.0.1:")


def test_address_without_address_is_clear():
    with pytest.raises(ClusterError, match="cluster.address"):
        make_client(ClusterConfig(kind="address"))


def test_unreachable_scheduler_is_clear():
    with pytest.raises(ClusterError, match="cannot reach"):
        make_client(ClusterConfig(kind="address", address="tcp://127.0.0.1:1"))


def test_slurm_job_script_rendered_without_submitting():
    cfg = ClusterConfig(
        kind="slurm",
        queue="gpu",
        account="lab42",
        cores=4,
        memory="16GiB",
        walltime="01:30:00",
        job_extra_directives=("--constraint=a100",),
    )
    script = slurm_job_script(cfg)
    assert "#SBATCH -p gpu" in script
    assert "#SBATCH -A lab42" in script
    assert "#SBATCH -t 01:30:00" in script
    assert "#SBATCH --constraint=a100" in script
    assert "--cpus-per-task=4" in script
    assert "dask_worker" in script or "dask-worker" in script


def test_cuda_without_gpu_is_clear():
    try:
        import torch

        if torch.cuda.is_available():
            pytest.skip("a GPU is present")
    except ImportError:  # pragma: no cover
        pass
    # Either dask-cuda is missing (install hint) or no GPU is visible.
    with pytest.raises(LptemError) as err:
        make_client(ClusterConfig(kind="cuda"))
    msg = str(err.value)
    assert "pip install 'lptem-dask[gpu]'" in msg or "no CUDA GPU" in msg


def test_local_workers_start_without_malloc_trim_threshold():
    # a MALLOC_TRIM_THRESHOLD_ in the workers makes every large tensor a fresh mmap
    # (U-Net forward passes 1.4x slower in a worker than in the client)
    from lptem_dask.cluster import make_client

    with make_client(ClusterConfig(n_workers=1, threads_per_worker=1, dashboard_port=0)) as c:
        env = c.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_"))
    assert list(env.values()) == [None]
