from pathlib import Path

import pytest

from lptem_dask.errors import OutputExistsError
from lptem_dask.store import atomic_path, check_output_path, table_path


def test_atomic_path_file_appears_whole(tmp_path: Path):
    final = tmp_path / "out.txt"
    with atomic_path(final) as tmp:
        tmp.write_text("data")
        assert not final.exists()
    assert final.read_text() == "data"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_path_failure_leaves_nothing(tmp_path: Path):
    final = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_path(final) as tmp:
            tmp.mkdir()
            (tmp / "part").write_text("half")
            raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_refuses_existing_without_overwrite(tmp_path: Path):
    final = tmp_path / "out.txt"
    final.write_text("precious")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        with atomic_path(final) as tmp:
            tmp.write_text("new")  # pragma: no cover
    assert final.read_text() == "precious"


def test_atomic_path_overwrite_replaces_dir(tmp_path: Path):
    final = tmp_path / "store"
    final.mkdir()
    (final / "old").write_text("old")
    with atomic_path(final, overwrite=True) as tmp:
        tmp.mkdir()
        (tmp / "new").write_text("new")
    assert sorted(p.name for p in final.iterdir()) == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


def test_failed_overwrite_keeps_old(tmp_path: Path):
    final = tmp_path / "store"
    final.mkdir()
    (final / "old").write_text("old")
    with pytest.raises(ValueError):
        with atomic_path(final, overwrite=True) as tmp:
            tmp.mkdir()
            raise ValueError("boom")
    assert (final / "old").read_text() == "old"


def test_check_output_path_and_table_path(tmp_path: Path):
    assert check_output_path(tmp_path / "x", overwrite=False) == tmp_path / "x"
    assert (
        table_path(tmp_path / "v.zarr", "regions")
        == tmp_path / "v.zarr" / "tables" / "regions.parquet"
    )


def test_store_lock_refuses_second_run_and_recovers_stale(tmp_path: Path):
    import json
    import os
    import socket
    import subprocess

    from lptem_dask.errors import LockedError
    from lptem_dask.store import store_lock

    out = tmp_path / "video.zarr"
    with store_lock(out) as lock:
        owner = json.loads(lock.read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        with pytest.raises(LockedError, match=str(os.getpid())):
            with store_lock(out):
                pass  # pragma: no cover
    assert not lock.exists()
    # a lock whose owner died is taken over
    dead = subprocess.Popen(["true"])
    dead.wait()
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    with store_lock(out):
        pass
