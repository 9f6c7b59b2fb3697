"""ingest: any input -> chunked zstd Zarr v3 store, atomic, lazy on request, bit-exact."""

from __future__ import annotations

import json

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr
from dask.delayed import Delayed
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from test_io import raise_if_dask_computes

from lptem_dask.errors import FormatError, InputError
from lptem_dask.io import describe, from_array, ingest, open_video


def _siblings(path):
    return sorted(p.name for p in path.parent.iterdir())


def test_ingest_tiff_round_trip_and_layout(tmp_path):
    a = np.random.default_rng(1).integers(0, 65535, (7, 24, 20), dtype=np.uint16)
    src = tmp_path / "s.tif"
    tifffile.imwrite(
        src, a, imagej=True, resolution=(2.0, 2.0), metadata={"unit": "nm", "finterval": 0.1}
    )
    dst = tmp_path / "s.zarr"
    assert ingest(src, dst) == dst
    meta = json.loads((dst / "zarr.json").read_text())
    assert meta["zarr_format"] == 3 and meta["node_type"] == "group"
    (ms,) = meta["attributes"]["ome"]["multiscales"]  # OME-Zarr viewers find the image
    assert ms["datasets"][0]["path"] == "image"
    np.testing.assert_allclose(
        ms["datasets"][0]["coordinateTransformations"][0]["scale"], [0.1, 0.5, 0.5]
    )
    arr = zarr.open_array(dst / "image", mode="r")
    assert arr.metadata.zarr_format == 3 and arr.dtype == np.uint16
    assert any(type(c).__name__ == "ZstdCodec" for c in arr.compressors)
    assert arr.chunks == (7, 24, 20)  # whole video < 32 MB: one chunk
    np.testing.assert_array_equal(arr[...], a)
    v = open_video(dst)
    np.testing.assert_array_equal(v.values, a)
    assert v.attrs["pixel_size_nm"] == 0.5 and v.attrs["frame_interval_s"] == pytest.approx(0.1)
    assert v.attrs["source"] == str(src)
    (rec,) = v.attrs["history"]
    assert rec["step"] == "ingest" and rec["version"] and len(rec["config_sha256"]) == 64
    info = describe(dst)
    assert info["format"] == "zarr" and info["frames"] == 7 and info["size_on_disk_bytes"] > 0
    assert describe(v) == info  # a video from open_video knows where it was read from
    assert describe(open_video(src))["format"] == "tiff"
    assert describe(open_video(src))["size_on_disk_bytes"] == src.stat().st_size
    assert describe(dst, pixel_size_nm=3.0)["pixel_size_nm"] == 3.0
    ingest(v, tmp_path / "again.zarr")  # bookkeeping in .encoding is never written out
    np.testing.assert_array_equal(open_video(tmp_path / "again.zarr").values, a)
    assert _siblings(dst) == ["again.zarr", "s.tif", "s.zarr"]  # no temporary left behind


def test_ingest_chunks_sized_by_chunk_mb(tmp_path):
    # 0.5 MB frames, built lazily (never held in memory)
    video = from_array(da.zeros((100, 512, 512), dtype=np.uint16, chunks=(10, 512, 512)))
    ingest(video, tmp_path / "a.zarr")
    assert zarr.open_array(tmp_path / "a.zarr" / "image").chunks == (61, 512, 512)  # 32 MB
    ingest(video, tmp_path / "b.zarr", chunk_mb=16)
    assert zarr.open_array(tmp_path / "b.zarr" / "image").chunks == (30, 512, 512)
    v = open_video(tmp_path / "b.zarr")
    assert v.chunks[0] == (30, 30, 30, 10)
    assert int(v.max()) == 0


def test_ingest_compute_false_builds_without_computing(tmp_path):
    a = np.arange(6 * 8 * 8, dtype=np.float32).reshape(6, 8, 8)
    src = tmp_path / "s.tif"
    tifffile.imwrite(src, a)
    dst = tmp_path / "lazy.zarr"
    with raise_if_dask_computes():
        job = ingest(src, dst, compute=False)
    assert isinstance(job, Delayed)
    assert not dst.exists()
    job.compute()
    np.testing.assert_array_equal(open_video(dst).values, a)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_ingest_overwrite_replaces(tmp_path):
    dst = tmp_path / "o.zarr"
    ingest(from_array(np.zeros((2, 4, 4), np.uint8)), dst)
    ingest(from_array(np.ones((3, 4, 4), np.uint8)), dst, overwrite=True)
    np.testing.assert_array_equal(open_video(dst).values, np.ones((3, 4, 4), np.uint8))
    assert _siblings(dst) == ["o.zarr"]


def test_ingest_failure_leaves_nothing(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (64, 64), np.uint8)).save(frames / f"{i}.png")
    data = (frames / "2.png").read_bytes()
    (frames / "2.png").write_bytes(data[: len(data) // 2])
    dst = tmp_path / "x.zarr"
    with pytest.raises(FormatError, match="2.png"):
        ingest(frames, dst)
    assert _siblings(dst) == ["frames"]


def test_ingest_calibration_override(tmp_path):
    src = tmp_path / "s.tif"
    tifffile.imwrite(src, np.zeros((3, 4, 4), np.uint8), photometric="minisblack")
    ingest(src, tmp_path / "c.zarr", pixel_size_nm=0.2, frame_interval_s=0.5)
    v = open_video(tmp_path / "c.zarr")
    assert v.attrs["pixel_size_nm"] == 0.2 and v.attrs["pixel_size_known"] is True
    np.testing.assert_allclose(v["time"].values, [0.0, 0.5, 1.0])
    np.testing.assert_allclose(v["x"].values, [0.1, 0.3, 0.5, 0.7])


def test_ingest_rejects_bad_parameters(tmp_path):
    v = from_array(np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(InputError, match="`chunk_mb`"):
        ingest(v, tmp_path / "a.zarr", chunk_mb=0)
    with pytest.raises(InputError, match="`compression_level`"):
        ingest(v, tmp_path / "a.zarr", compression_level=40)
    assert not (tmp_path / "a.zarr").exists()


@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    dtype=st.sampled_from(["uint8", "uint16", "int16", "int32", "float32", "float64"]),
    n=st.integers(1, 7),
    ny=st.integers(1, 9),
    nx=st.integers(1, 9),
    chunk=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_round_trip_bit_exact(tmp_path_factory, dtype, n, ny, nx, chunk, seed):
    rng = np.random.default_rng(seed)
    if dtype.startswith("float"):
        a = rng.normal(0, 1e3, (n, ny, nx)).astype(dtype)
        a.flat[rng.integers(0, a.size)] = np.nan
    else:
        info = np.iinfo(dtype)
        a = rng.integers(info.min, info.max, (n, ny, nx), dtype=dtype, endpoint=True)
    v = from_array(da.from_array(a, chunks=(chunk, ny, nx)), pixel_size_nm=0.3)
    dst = tmp_path_factory.mktemp("rt") / "v.zarr"
    ingest(v, dst)
    w = open_video(dst)
    assert w.dtype == a.dtype
    np.testing.assert_array_equal(w.values, a)
    assert w.values.tobytes() == a.tobytes()  # NaN payloads and signed zeros too


@pytest.mark.slow
def test_ingest_on_a_process_cluster(tmp_path):
    """Readers and the ingest graph run on a LocalCluster of processes (pickled sources)."""
    from distributed import Client, LocalCluster

    a = np.arange(6 * 16 * 16, dtype=np.uint16).reshape(6, 16, 16)
    tifffile.imwrite(tmp_path / "s.tif", a, photometric="minisblack")
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as c,
        Client(c),
    ):
        v = open_video(tmp_path / "s.tif", chunks=1)
        np.testing.assert_array_equal(v.values, a)
        ingest(tmp_path / "s.tif", tmp_path / "s.zarr", chunk_mb=0.001)
        w = open_video(tmp_path / "s.zarr")
        assert w.chunks[0] == (1,) * 6
        np.testing.assert_array_equal(w.values, a)
