"""Tests of lptem_dask.track: linking with trackpy, drift, orientation, windowed linking."""

from __future__ import annotations

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
import trackpy
import xarray as xr
from scipy import ndimage as ndi

from lptem_dask import schema
from lptem_dask.errors import InputError, OutputExistsError, StoreError
from lptem_dask.measure import read_table, write_table
from lptem_dask.track import (
    link,
    link_store,
    registration_drift,
    tracks_drift,
    unwrap_orientation,
)

trackpy.quiet()


def brownian_table(
    *,
    n: int = 50,
    frames: int = 100,
    box_nm: float = 1000.0,
    step_fraction: float = 0.3,
    diameter_nm: float = 20.0,
    loc_noise_nm: float = 1.0,
    drift_nm_per_frame: tuple[float, float] = (0.0, 0.0),
    seed: int = 0,
) -> tuple[pd.DataFrame, float]:
    """Hard-disk Brownian particles in a reflecting box; rms 2-D step = step_fraction x spacing.

    Returns the table (shuffled rows within frames; column ``true_id``) and the
    typical spacing (mean nearest-neighbour distance, nm).
    """
    rng = np.random.default_rng(seed)
    pos = np.empty((0, 2))
    while len(pos) < n:
        p = rng.uniform(diameter_nm, box_nm - diameter_nm, 2)
        if len(pos) == 0 or np.hypot(*(pos - p).T).min() > 2 * diameter_nm:
            pos = np.vstack([pos, p])
    d = np.hypot(*(pos[:, None] - pos[None]).transpose(2, 0, 1))
    np.fill_diagonal(d, np.inf)
    spacing = float(d.min(axis=1).mean())
    sigma = step_fraction * spacing / np.sqrt(2)  # per axis
    rows = []
    for f in range(frames):
        if f > 0:
            for i in rng.permutation(n):
                new = pos[i] + rng.normal(0, sigma, 2)
                new = np.abs(new)  # reflect at 0 and box_nm
                new = box_nm - np.abs(box_nm - new)
                others = np.delete(pos, i, axis=0)
                if np.hypot(*(others - new).T).min() > diameter_nm:
                    pos[i] = new
        shift = np.array(drift_nm_per_frame) * f
        obs = pos + shift + rng.normal(0, loc_noise_nm, pos.shape)
        order = rng.permutation(n)
        rows.append(
            pd.DataFrame(
                {
                    "frame": np.full(n, f, np.int64),
                    "label": np.arange(1, n + 1, dtype=np.int32),
                    "y_nm": obs[order, 0],
                    "x_nm": obs[order, 1],
                    "orientation_deg": rng.uniform(-90, 90, n),
                    "true_id": order,
                }
            )
        )
    return pd.concat(rows, ignore_index=True), spacing


def wrong_link_fraction(tracks: pd.DataFrame) -> tuple[float, float]:
    """Fraction of links joining different true particles, and fraction of true links found."""
    t = tracks.sort_values(["particle", "frame"])
    same = t["particle"].to_numpy()[1:] == t["particle"].to_numpy()[:-1]
    truth_same = t["true_id"].to_numpy()[1:] == t["true_id"].to_numpy()[:-1]
    n_links = same.sum()
    wrong = (same & ~truth_same).sum()
    n_true = len(tracks) - tracks["true_id"].nunique()
    return wrong / max(n_links, 1), (same & truth_same).sum() / n_true


def partition(tracks: pd.DataFrame) -> set[frozenset]:
    """Trajectories as sets of (frame, label), independent of particle numbering."""
    return {
        frozenset(zip(g["frame"], g["label"], strict=True)) for _, g in tracks.groupby("particle")
    }


# ------------------------------------------------------------------------- linking
def test_brownian_linking_under_one_percent_wrong_links():
    # particles 40 nm across, mean nearest-neighbour spacing ~100 nm, rms step 0.3 x spacing
    # (point-like 20 nm particles at the same step give ~1.2% wrong links: swaps on contact)
    table, spacing = brownian_table(seed=1, diameter_nm=40.0)
    srt = table.sort_values(["true_id", "frame"])
    dy = np.diff(srt.y_nm.to_numpy())
    dx = np.diff(srt.x_nm.to_numpy())
    ok = np.diff(srt.true_id.to_numpy()) == 0
    steps = np.hypot(dy, dx)[ok]
    assert np.sqrt(np.mean(steps**2)) <= 0.3 * spacing * 1.05
    tracks = link(table, search_range_nm=0.8 * spacing, memory=0)
    wrong, found = wrong_link_fraction(tracks)
    print(f"spacing {spacing:.1f} nm, wrong links {wrong:.4%}, links found {found:.4%}")
    assert wrong < 0.01
    assert found > 0.98
    assert tracks["particle"].dtype == np.int64
    assert list(tracks.columns)[: len(table.columns)] == list(table.columns)
    # a test that can fail: a search range far too small breaks trajectories
    short = link(table, search_range_nm=0.1 * spacing, memory=0)
    assert wrong_link_fraction(short)[1] < 0.8


def test_link_equals_bare_trackpy_and_accepts_dask():
    table, spacing = brownian_table(n=20, frames=20, seed=2)
    ours = link(dd.from_pandas(table, npartitions=3), search_range_nm=0.6 * spacing, memory=2)
    bare = trackpy.link(table, 0.6 * spacing, pos_columns=["y_nm", "x_nm"], memory=2)
    assert partition(ours) == partition(bare)
    assert (ours["drift_y_nm"] == 0).all()


def test_memory_bridges_gaps():
    table, spacing = brownian_table(n=10, frames=12, seed=3)
    # particle with true_id 0 is missing in frames 4 and 5
    gap = table[~((table.true_id == 0) & table.frame.isin([4, 5]))]
    t0 = link(gap, search_range_nm=0.6 * spacing, memory=0)
    t2 = link(gap, search_range_nm=0.6 * spacing, memory=2)
    assert t0[t0.true_id == 0].particle.nunique() == 2
    assert t2[t2.true_id == 0].particle.nunique() == 1


def test_adaptive_search_runs_and_links_correctly():
    table, spacing = brownian_table(n=50, frames=30, seed=4, diameter_nm=40.0)
    tracks = link(table, search_range_nm=0.9 * spacing, adaptive_stop_nm=0.3 * spacing, memory=0)
    assert wrong_link_fraction(tracks)[0] < 0.01
    with pytest.raises(InputError, match="adaptive_stop_nm"):
        link(table, search_range_nm=10, adaptive_stop_nm=20)
    # the LinkConfig name is an alias
    alias = link(table, search_range_nm=0.9 * spacing, adaptive_stop=0.3 * spacing, memory=0)
    pd.testing.assert_frame_equal(alias, tracks)


def test_stub_filtering():
    table, spacing = brownian_table(n=10, frames=10, seed=5)
    # a particle seen only in 3 frames
    extra = pd.DataFrame(
        {
            "frame": [2, 3, 4],
            "label": [99, 99, 99],
            "y_nm": [-500.0, -500, -500],
            "x_nm": [-500.0, -500, -500],
            "orientation_deg": [0.0, 0, 0],
            "true_id": [99, 99, 99],
        }
    )
    t = link(pd.concat([table, extra]), search_range_nm=0.6 * spacing, min_length=5)
    assert 99 not in set(t.true_id)
    assert t.true_id.nunique() == 10
    assert t.index.equals(pd.RangeIndex(len(t)))


def test_empty_table_gives_typed_empty_tracks():
    t = link(schema.empty_regions(), search_range_nm=5.0)
    assert len(t) == 0
    assert str(t["particle"].dtype) == "int64"
    assert set(schema.empty_tracks().columns) == set(t.columns)


def test_bad_inputs():
    with pytest.raises(InputError, match="search_range_nm"):
        link(schema.empty_regions(), search_range_nm=0)
    with pytest.raises(InputError, match="x_nm"):
        link(pd.DataFrame({"frame": [0], "y": [1.0]}), search_range_nm=1)
    with pytest.raises(InputError, match="drift"):
        link(schema.empty_regions(), search_range_nm=1, drift="magic")
    with pytest.raises(InputError, match="video"):
        link(schema.empty_regions(), search_range_nm=1, drift="registration")


# --------------------------------------------------------------------------- drift
def test_drift_from_tracks_is_recovered_and_helps_linking():
    table, spacing = brownian_table(
        n=50, frames=40, seed=6, drift_nm_per_frame=(12.0, -9.0), diameter_nm=40.0
    )
    tracks = link(table, search_range_nm=0.6 * spacing, drift="tracks", memory=0)
    d = tracks.groupby("frame")[["drift_y_nm", "drift_x_nm"]].first()
    f = d.index.to_numpy()
    # the mean Brownian step of 50 particles is ~3 nm per frame, random-walking
    assert np.abs(d.drift_y_nm - 12.0 * f).max() < 0.05 * 12 * f.max()
    assert np.abs(d.drift_x_nm + 9.0 * f).max() < 0.05 * 9 * f.max()
    wrong = wrong_link_fraction(tracks)[0]
    assert wrong < 0.01
    plain = link(table, search_range_nm=0.6 * spacing, memory=0)
    assert wrong_link_fraction(plain)[0] > 2 * wrong
    # positions stay as measured
    np.testing.assert_allclose(np.sort(tracks.y_nm.to_numpy()), np.sort(table.y_nm.to_numpy()))
    # a precomputed drift table gives the same tracks
    again = link(table, search_range_nm=0.6 * spacing, drift=d, memory=0)
    pd.testing.assert_frame_equal(again, tracks)
    # tracks_drift equals trackpy.compute_drift where trackpy defines it
    td = tracks_drift(tracks)
    tp = trackpy.compute_drift(tracks, pos_columns=["y_nm", "x_nm"])
    np.testing.assert_allclose(td.loc[tp.index, "drift_y_nm"], tp["y_nm"])


def _blob_video(n_frames, shift_px_per_frame, size=64, seed=0):
    rng = np.random.default_rng(seed)
    pts = rng.uniform(8, size - 8, (12, 2))
    yy, xx = np.mgrid[:size, :size]
    frames = []
    for f in range(n_frames):
        img = np.zeros((size, size))
        for y, x in pts + np.array(shift_px_per_frame) * f:
            img += np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 2.0**2))
        frames.append(img + rng.normal(0, 0.01, img.shape))
    return np.stack(frames), pts


def test_registration_drift_recovers_shift():
    frames, _ = _blob_video(6, (0.7, -1.3))
    video = xr.DataArray(
        frames,
        dims=("frame", "y", "x"),
        coords={"frame": np.arange(6)},
        attrs={"pixel_size_nm": 2.0},
    ).chunk({"frame": 4})
    d = registration_drift(video)
    np.testing.assert_allclose(d.drift_y_nm.to_numpy(), 0.7 * 2.0 * np.arange(6), atol=0.3)
    np.testing.assert_allclose(d.drift_x_nm.to_numpy(), -1.3 * 2.0 * np.arange(6), atol=0.3)
    table = pd.DataFrame(
        {"frame": np.arange(6), "y_nm": 10 + 1.4 * np.arange(6), "x_nm": 50 - 2.6 * np.arange(6)}
    )
    t = link(table, search_range_nm=1.0, drift="registration", video=video)
    assert t.particle.nunique() == 1
    assert link(table, search_range_nm=1.0).particle.nunique() > 1


# ---------------------------------------------------------------------- orientation
def test_orientation_unwrapping_with_symmetry():
    n = 30
    true = 10.0 + 17.0 * np.arange(n)  # rotating 17 deg per frame
    table = pd.DataFrame(
        {
            "frame": np.arange(n),
            "label": np.ones(n, np.int32),
            "y_nm": np.zeros(n),
            "x_nm": np.zeros(n),
            "orientation_deg": ((true + 90) % 180) - 90,
            "prism_orientation_deg": true % 120,
        }
    )
    t = link(table, search_range_nm=1.0, symmetry_deg=120)
    np.testing.assert_allclose(t.orientation_unwrapped_deg, true)
    t = link(table, search_range_nm=1.0)  # the axis, period 180
    np.testing.assert_allclose(t.orientation_unwrapped_deg, true - 0.0)
    u = unwrap_orientation(
        pd.DataFrame({"particle": [1, 1, 2, 2], "frame": [0, 1, 0, 1], "a": [89.0, -89, 0, 44]}),
        symmetry_deg=90,
        column="a",
    )
    np.testing.assert_allclose(u, [89.0, 91.0, 0.0, 44.0])


def test_unwrapping_keeps_the_rotation_across_a_missing_orientation():
    """A frame whose outline gave no orientation (NaN) must not drop the rotation
    between its neighbours: the steps are taken between measured orientations."""
    true = 10.0 + 17.0 * np.arange(8)
    a = true % 120
    a[[2, 5]] = np.nan
    t = pd.DataFrame({"particle": 0, "frame": np.arange(8), "prism_orientation_deg": a})
    u = unwrap_orientation(t, symmetry_deg=120, column="prism_orientation_deg")
    ok = ~np.isnan(a)
    np.testing.assert_allclose(u[ok], true[ok])
    assert np.isnan(u[~ok]).all()
    # a trajectory that starts without an orientation starts at its first measured one
    t2 = pd.DataFrame(
        {"particle": 3, "frame": [0, 1, 2], "prism_orientation_deg": [np.nan, 115.0, 5.0]}
    )
    np.testing.assert_allclose(
        unwrap_orientation(t2, symmetry_deg=120, column="prism_orientation_deg")[1:], [115.0, 125.0]
    )


# -------------------------------------------------------------- windowed, from store
def _store_with_regions(tmp_path, table, frames_per_part):
    t = table.drop(columns=["true_id"]).sort_values(["frame", "label"], kind="stable")
    parts = [g for _, g in t.groupby(t.frame // frames_per_part)]
    ddf = dd.from_pandas(t, npartitions=1)
    ddf = dd.from_delayed(
        [__import__("dask").delayed(p.reset_index(drop=True)) for p in parts],
        meta=t.iloc[:0],
    )
    write_table(ddf, tmp_path / "v.zarr", "regions")
    return tmp_path / "v.zarr", t


def _assert_windowed_equals_whole(store, t, window_frames=7, batch_rows=333, **kw):
    whole = link(t, **kw)
    out = link_store(store, **kw, window_frames=window_frames, batch_rows=batch_rows)
    parts = sorted(out.glob("part.*.parquet"))
    windowed = read_table(out).compute().reset_index(drop=True)
    assert len(windowed) == len(whole)
    pd.testing.assert_frame_equal(windowed, whole, check_dtype=True)
    return parts


def test_link_store_equals_whole_video_linking_small(tmp_path):
    table, spacing = brownian_table(n=30, frames=80, seed=7)
    store, t = _store_with_regions(tmp_path, table, frames_per_part=9)
    parts = _assert_windowed_equals_whole(
        store, t, search_range_nm=0.6 * spacing, memory=2, min_length=3
    )
    assert len(parts) >= 10  # 80 frames in windows of 7 frames
    with pytest.raises(OutputExistsError):
        link_store(store, search_range_nm=0.6 * spacing)


def test_link_store_drift_and_unwrap_equal_whole(tmp_path):
    table, spacing = brownian_table(n=30, frames=60, seed=8, drift_nm_per_frame=(8.0, 3.0))
    table["prism_orientation_deg"] = (table.true_id * 7.0 + 11.0 * table.frame) % 120
    store, t = _store_with_regions(tmp_path, table, frames_per_part=10)
    _assert_windowed_equals_whole(
        store, t, search_range_nm=0.6 * spacing, memory=1, drift="tracks", symmetry_deg=120
    )


def test_link_store_of_empty_regions_gives_typed_empty_tracks(tmp_path):
    write_table(dd.from_pandas(schema.empty_regions("prism"), npartitions=2), tmp_path, "regions")
    out = link_store(tmp_path, search_range_nm=5.0, symmetry_deg=120)
    t = read_table(out).compute()
    expected = link(schema.empty_regions("prism"), search_range_nm=5.0, symmetry_deg=120)
    assert len(t) == 0
    assert dict(t.dtypes.astype(str)) == dict(expected.dtypes.astype(str))


def test_link_store_refuses_unordered_regions(tmp_path):
    t = pd.DataFrame({"frame": [3, 1], "label": [1, 1], "y_nm": [0.0, 0], "x_nm": [0.0, 0]})
    write_table(t, tmp_path, "regions")
    with pytest.raises(StoreError, match="not ordered"):
        link_store(tmp_path, search_range_nm=1.0)
    with pytest.raises(StoreError, match="does not exist"):
        link_store(tmp_path, search_range_nm=1.0, regions="nothing")


@pytest.mark.slow
def test_link_store_equals_whole_video_linking_1e5_rows(tmp_path):
    table, spacing = brownian_table(n=100, frames=1000, seed=9, loc_noise_nm=0.5)
    assert len(table) >= 100_000
    store, t = _store_with_regions(tmp_path, table, frames_per_part=50)
    parts = _assert_windowed_equals_whole(
        store, t, search_range_nm=0.6 * spacing, memory=3, window_frames=80, batch_rows=20000
    )
    assert len(parts) >= 10


def test_helpers_are_consistent():
    # ndi import used by blob video; keep the helper honest
    assert ndi is not None


# ------------------------------------------------------ simulated video, end to end
def _otsu_probability(frames: np.ndarray) -> np.ndarray:
    """A classical stand-in for the U-Net: smoothed Otsu mask (dark particles), as 0/1."""
    from skimage.filters import threshold_otsu

    out = np.zeros(frames.shape, np.float32)
    for i, f in enumerate(frames):
        s = ndi.gaussian_filter(f.astype(np.float64), 1.5)
        m = ndi.binary_opening(s < threshold_otsu(s), iterations=1)
        out[i] = ndi.binary_fill_holes(m)
    return out


def test_simulated_video_segment_measure_link():
    sim = pytest.importorskip("lptem_dask.simulate.dynamics")
    from lptem_dask.measure import measure_regions
    from lptem_dask.segment.postprocess import label_frames

    video, truth = sim.simulate_video(
        "brownian",
        n_frames=8,
        seed=0,
        image_size_px=96,
        n_particles=5,
        size_nm=40.0,
        diffusion_nm2_s=300.0,
        target_cnr="high",
        frames_per_chunk=4,
        boundary="reflecting",
    )
    prob = xr.DataArray(
        _otsu_probability(video.values), dims=video.dims, coords=video.coords, attrs=video.attrs
    )
    labels = label_frames(prob, min_area_px=20)
    regions = measure_regions(labels, video, shape="prism")
    tracks = link(regions, search_range_nm=15.0, memory=1, symmetry_deg=120)
    tracks = tracks[~tracks.touches_border].reset_index(drop=True)
    # match each region to the nearest true particle of its frame
    match, dist = [], []
    for f, g in tracks.groupby("frame", sort=False):
        tt = truth[truth.frame == f]
        d = np.hypot(
            g.y.to_numpy()[:, None] - tt.y.to_numpy(), g.x.to_numpy()[:, None] - tt.x.to_numpy()
        )
        match.append(pd.Series(tt.particle.to_numpy()[d.argmin(1)], index=g.index))
        dist.append(pd.Series(d.min(1), index=g.index))
    tracks["true_particle"] = pd.concat(match)
    tracks["error_px"] = pd.concat(dist)
    single = tracks[tracks.area_px < 1.5 * tracks.area_px.median()]  # merged pairs excluded
    print(
        f"simulated video: {len(tracks)} regions, centroid error median "
        f"{single.error_px.median():.3f} px, p95 {single.error_px.quantile(0.95):.3f} px"
    )
    assert single.error_px.median() < 0.5
    assert single.error_px.quantile(0.95) < 1.5
    # every trajectory follows one particle
    purity = single.groupby("particle").true_particle.agg(
        lambda s: s.value_counts().iloc[0] / len(s)
    )
    assert (purity == 1.0).all()
    # orientation modulo 120 deg and its unwrapping along each trajectory
    t = truth.set_index(["frame", "particle"])
    key = list(zip(single.frame, single.true_particle, strict=True))
    true_o = t.loc[key, "orientation_deg"].to_numpy()
    err = np.abs((single.prism_orientation_deg.to_numpy() - true_o % 120 + 60) % 120 - 60)
    assert np.median(err) < 3.0
    diff = (
        single.orientation_unwrapped_deg.to_numpy()
        - t.loc[key, "orientation_unwrapped_deg"].to_numpy()
    )
    for _, d in pd.Series(diff, index=single.particle.to_numpy()).groupby(level=0):
        assert np.ptp(d.to_numpy()) < 30.0  # one offset per trajectory (no 120-deg slips)
