"""Tests of lptem_dask.results: a store's results as one lazy xr.Dataset, CSV export."""

from __future__ import annotations

import dask
import dask.array as da
import matplotlib
import numpy as np
import pandas as pd
import pytest
import trackpy
import xarray as xr
from skimage.draw import disk

from lptem_dask import io
from lptem_dask.errors import OutputExistsError, StoreError
from lptem_dask.measure import measure_regions, measure_store, read_table, write_table
from lptem_dask.results import export_csv, open_results, tracks_dataset
from lptem_dask.store import create_labels_array
from lptem_dask.track import link, link_store

matplotlib.use("Agg")
trackpy.quiet()

DIMS = ("frame", "y", "x")


def _raise_on_compute(*args, **kwargs):
    raise AssertionError("dask computed while only a graph was to be built")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store with image, labels, regions and tracks of 3 discs moving over 12 frames."""
    n, size = 12, 48
    lab = np.zeros((n, size, size), np.int32)
    for f in range(n):
        centres = [(10 + 0.5 * f, 10 + f), (30, 35 - 0.7 * f), (38 - f, 12 + 0.3 * f)]
        for k, c in enumerate(centres):
            if k == 1 and f in (5, 6):
                continue  # particle absent for two frames
            rr, cc = disk(c, 4, shape=(size, size))
            lab[f, rr, cc] = k + 1
    image = np.where(lab > 0, 0.3, 1.0).astype(np.float32)
    video = io.from_array(image, pixel_size_nm=2.0, frame_interval_s=0.5, chunks=5)
    path = tmp_path_factory.mktemp("results") / "v.zarr"
    io.ingest(video, path)
    create_labels_array(path, lab.shape, (5, size, size))[:] = lab
    labels = xr.DataArray(
        da.from_array(lab, chunks=(5, -1, -1)), dims=DIMS, coords=video.coords, attrs=video.attrs
    )
    paths = measure_store(path, shape="rod", contours=True)
    assert set(paths) == {"regions", "contours"}
    pd.testing.assert_frame_equal(
        read_table(path, "regions").compute().reset_index(drop=True),
        measure_regions(labels, video, shape="rod").compute().reset_index(drop=True),
    )
    link_store(path, search_range_nm=10.0, memory=3, window_frames=4)
    return path


def test_open_results_tracks_as_particle_frame_variables(store):
    ds = open_results(store)
    assert set(ds.dims) >= {"frame", "y", "x", "particle"}
    assert ds["image"].dims == DIMS and isinstance(ds["image"].data, da.Array)
    assert ds["labels"].dims == DIMS
    assert int(ds["labels"].max()) == 3 and ds["labels"].dtype == np.int32
    assert ds["x_nm"].dims == ("particle", "frame")
    assert ds["x_nm"].attrs["units"] == "nm" and ds["area_nm2"].attrs["units"] == "nm^2"
    tracks = read_table(store, "tracks").compute()
    assert ds.sizes["particle"] == tracks.particle.nunique() == 3
    for p, g in tracks.groupby("particle"):
        x = ds.x_nm.sel(particle=p)
        np.testing.assert_allclose(x.sel(frame=g.frame.to_numpy()).values, g.x_nm.to_numpy())
        missing = np.setdiff1d(ds.frame.values, g.frame.to_numpy())
        assert np.isnan(x.sel(frame=missing).values).all()
    # particle 1 (the second disc) is absent in frames 5 and 6, yet one trajectory
    assert (tracks.groupby("particle").size().sort_values().to_numpy() == [10, 12, 12]).all()
    # a time window and a plot
    win = ds.sel(frame=slice(2, 4))
    assert win.sizes["frame"] == 3 and win.x_nm.notnull().all()
    ds.x_nm.sel(particle=int(tracks.particle.iloc[0])).plot()


def test_tracks_dataset_is_lazy_one_block_per_part(store):
    n_parts = len(list((store / "tables" / "tracks.parquet").glob("part.*.parquet")))
    with dask.config.set(scheduler=_raise_on_compute):
        tr = tracks_dataset(store)
        ds = open_results(store)
    assert n_parts == 3  # 12 frames in windows of 4
    assert len(tr["x_nm"].data.chunks[1]) == n_parts
    assert isinstance(ds["y_nm"].data, da.Array)


def test_open_results_tracks_only_and_errors(tmp_path):
    t = pd.DataFrame(
        {
            "frame": [0, 1, 2, 5, 6],
            "label": [1, 1, 1, 1, 1],
            "y_nm": [0.0, 1, 2, 3, 4],
            "x_nm": [0.0, 1, 2, 3, 4],
        }
    )
    tracks = link(t, search_range_nm=2.0, memory=3)
    write_table(tracks.iloc[:3], tmp_path, "tracks")
    ds = open_results(tmp_path)
    assert "image" not in ds and ds.sizes["frame"] == 3
    with pytest.raises(StoreError, match="does not exist"):
        open_results(tmp_path / "nope.zarr")
    empty = tmp_path / "empty.zarr"
    empty.mkdir()
    with pytest.raises(StoreError, match="neither"):
        open_results(empty)


def test_gaps_between_parts_are_nan(tmp_path):
    parts = [
        pd.DataFrame({"frame": [0, 1], "particle": [0, 0], "x_nm": [1.0, 2.0]}),
        pd.DataFrame({"frame": [4], "particle": [1], "x_nm": [5.0]}),
    ]
    ddf = __import__("dask.dataframe", fromlist=["x"]).from_delayed(
        [dask.delayed(p) for p in parts], meta=parts[0].iloc[:0]
    )
    write_table(ddf, tmp_path, "tracks")
    tr = tracks_dataset(tmp_path)
    np.testing.assert_array_equal(tr.frame, [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(tr.x_nm.sel(particle=0).values[:2], [1.0, 2.0])
    assert np.isnan(tr.x_nm.values[:, 2:4]).all()
    assert float(tr.x_nm.sel(particle=1, frame=4).values) == 5.0


def test_export_csv_roundtrip(store, tmp_path):
    out = export_csv(store, "regions", tmp_path / "regions.csv")
    back = pd.read_csv(out)
    regions = read_table(store, "regions").compute().reset_index(drop=True)
    assert list(back.columns) == list(regions.columns)
    np.testing.assert_allclose(back.x_nm, regions.x_nm)
    assert (back.frame.to_numpy() == regions.frame.to_numpy()).all()
    with pytest.raises(OutputExistsError):
        export_csv(store, "regions", out)
