"""Tests of lptem_dask.measure and lptem_dask.schema on shapes with exactly known geometry."""

from __future__ import annotations

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from skimage.draw import disk, polygon2mask

from lptem_dask import schema
from lptem_dask.errors import InputError, OutputExistsError, StoreError
from lptem_dask.measure import (
    _measure_block,
    closed_curvature,
    column_units,
    measure_contours,
    measure_regions,
    read_table,
    resample_closed,
    write_table,
    write_table_part,
)

DIMS = ("frame", "y", "x")


def _raise_on_compute(*args, **kwargs):
    raise AssertionError("dask computed while only a graph was to be built")


def screen_to_image(cy: float, cx: float, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Screen offsets (X right, Y up) from (cy, cx) -> (row, col) image coordinates."""
    return np.column_stack([cy - Y, cx + X])


def triangle(cy, cx, edge, phi_deg, n=64):
    """Equilateral triangle with one vertex in direction ``phi_deg`` (CCW from +x on screen)."""
    R = edge / np.sqrt(3)
    a = np.radians(phi_deg + np.array([0, 120, 240]))
    verts = screen_to_image(cy, cx, R * np.cos(a), R * np.sin(a))
    return polygon2mask((n, n), verts), verts


def capsule(cy, cx, half_straight, radius, angle_deg, n=96):
    """Spherocylinder: points within ``radius`` of a segment of length 2*half_straight."""
    yy, xx = np.mgrid[:n, :n].astype(float)
    X, Y = xx - cx, -(yy - cy)
    a = np.radians(angle_deg)
    s = X * np.cos(a) + Y * np.sin(a)
    w = -X * np.sin(a) + Y * np.cos(a)
    sc = np.clip(s, -half_straight, half_straight)
    return np.hypot(s - sc, w) <= radius


def ellipse_probability(cy, cx, a, b, angle_deg, n=96, edge_px=1.5):
    """Smooth probability map of an ellipse (0.5 on the exact outline)."""
    yy, xx = np.mgrid[:n, :n].astype(float)
    X, Y = xx - cx, -(yy - cy)
    th = np.radians(angle_deg)
    u = X * np.cos(th) + Y * np.sin(th)
    v = -X * np.sin(th) + Y * np.cos(th)
    f = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    return 1 / (1 + np.exp(-(1 - f) * min(a, b) / edge_px))


def ellipse_curvature(y, x, cy, cx, a, b, angle_deg):
    """Analytic curvature of the ellipse at the parameter of the points (y, x)."""
    X, Y = x - cx, -(y - cy)
    th = np.radians(angle_deg)
    u = X * np.cos(th) + Y * np.sin(th)
    v = -X * np.sin(th) + Y * np.cos(th)
    t = np.arctan2(v / b, u / a)
    return a * b / (a * a * np.sin(t) ** 2 + b * b * np.cos(t) ** 2) ** 1.5


def as_labels(*masks, attrs=None):
    lab = np.zeros(masks[0].shape, np.int32)
    for i, m in enumerate(masks):
        lab[m & (lab == 0)] = i + 1
    return xr.DataArray(lab[None], dims=DIMS, attrs=attrs or {"pixel_size_nm": 1.0})


# ------------------------------------------------------------------------ schema
def test_schema_empty_tables_are_typed():
    for shape in (None, "prism", "rod", "cube"):
        df = schema.empty_regions(shape)
        cols = schema.regions_columns(shape)
        assert list(df.columns) == list(cols) and len(df) == 0
        assert {c: str(df[c].dtype) for c in df} == schema.table_dtypes(cols)
    assert str(schema.empty_contours()["curvature_per_nm"].dtype) == "float64"
    tr = schema.empty_tracks()
    assert str(tr["particle"].dtype) == "int64" and "orientation_unwrapped_deg" in tr
    assert schema.units(["area_nm2", "curvature_per_nm", "zz"]) == {
        "area_nm2": "nm^2",
        "curvature_per_nm": "1/nm",
        "zz": "",
    }
    with pytest.raises(InputError, match="shape"):
        schema.regions_columns("sphere")


def test_empty_frames_give_typed_zero_row_tables():
    lab = xr.DataArray(np.zeros((3, 16, 16), np.int32), dims=DIMS, attrs={"pixel_size_nm": 2.0})
    for shape in (None, "prism", "rod"):
        t = measure_regions(lab, shape=shape).compute()
        assert len(t) == 0
        assert {c: str(t[c].dtype) for c in t} == schema.table_dtypes(schema.regions_columns(shape))
    c = measure_contours(lab).compute()
    assert len(c) == 0 and list(c.columns) == list(schema.CONTOURS)


# ------------------------------------------------------------------ basic geometry
def test_centroid_area_bbox_and_nm_conversion():
    n = 40
    m1 = np.zeros((n, n), bool)
    rr, cc = disk((10, 12), 5, shape=(n, n))
    m1[rr, cc] = True
    m2 = np.zeros((n, n), bool)
    m2[30:40, 20:26] = True  # touches the bottom border
    lab = as_labels(m1, m2, attrs={"pixel_size_nm": 2.5, "frame_interval_s": 0.1})
    image = xr.DataArray(np.where(lab.values > 0, 3.0, 10.0), dims=DIMS)
    prob = xr.DataArray(np.where(lab.values == 1, 0.8, 0.6), dims=DIMS)
    t = measure_regions(lab, image, probability=prob, dose_rate_e_per_A2_s=50.0).compute()
    assert t["label"].tolist() == [1, 2]
    r1, r2 = t.iloc[0], t.iloc[1]
    assert (r1.y, r1.x) == (10.0, 12.0)
    assert (r2.y, r2.x) == (34.5, 22.5)
    assert r1.y_nm == pytest.approx(10.5 * 2.5) and r2.x_nm == pytest.approx(23.0 * 2.5)
    assert r2.area_px == 60 and r2.area_nm2 == pytest.approx(60 * 6.25)
    assert (r2.bbox_y0, r2.bbox_x0, r2.bbox_y1, r2.bbox_x1) == (30, 20, 40, 26)
    assert bool(r2.touches_border) and not bool(r1.touches_border)
    assert r1.mean_intensity == 3.0 and r1.confidence == pytest.approx(0.8)
    assert r2.confidence == pytest.approx(0.6)
    assert r1.equivalent_diameter_nm == pytest.approx(2 * np.sqrt(r1.area_px / np.pi) * 2.5)
    assert r1.time_s == 0.0 and r1.dose_e_per_A2 == 0.0  # frame 0 at t = 0
    t2 = measure_regions(lab).compute()
    assert np.isnan(t2.dose_e_per_A2).all() and np.isnan(t2.confidence).all()


def test_local_contrast_against_its_background_ring():
    """contrast = (background - region) / background with the background from a ring
    2-6 px around each region: a dark particle on a brighter, uneven background, and
    a bright one (dark-field) on the other side."""
    n = 64
    m1 = np.zeros((n, n), bool)
    m1[10:20, 10:20] = True
    m2 = np.zeros((n, n), bool)
    m2[40:50, 40:50] = True
    lab = as_labels(m1, m2, attrs={"pixel_size_nm": 1.0})
    img = np.where(np.arange(n)[None, :] < 32, 100.0, 200.0) * np.ones((n, 1))
    img[m1] = 60.0  # dark on 100
    img[m2] = 260.0  # bright on 200
    t = measure_regions(lab, xr.DataArray(img[None], dims=DIMS)).compute()
    assert t["contrast"].tolist() == pytest.approx([0.4, -0.3])
    # pixels 1 px outside a region are not background (its blurred edge)
    img2 = img.copy()
    img2[9, 10:20] = 0.0
    t2 = measure_regions(lab, xr.DataArray(img2[None], dims=DIMS)).compute()
    assert t2["contrast"].iloc[0] == pytest.approx(0.4)
    assert np.isnan(measure_regions(lab).compute()["contrast"]).all()


def test_time_and_cumulative_dose_from_video_attrs():
    lab = np.zeros((3, 16, 16), np.int32)
    lab[:, 4:8, 4:8] = 1
    video = xr.DataArray(
        np.ones((3, 16, 16)),
        dims=DIMS,
        coords={"frame": [0, 1, 2], "time": ("frame", [0.0, 0.5, 1.0])},
        attrs={"pixel_size_nm": 1.0, "dose_rate_e_per_A2_s": 20.0},
    )
    t = measure_regions(xr.DataArray(lab, dims=DIMS, coords={"frame": [0, 1, 2]}), video).compute()
    assert t["time_s"].tolist() == [0.0, 0.5, 1.0]
    assert t["dose_e_per_A2"].tolist() == [0.0, 10.0, 20.0]


@pytest.mark.parametrize("angle", [-75.0, -30.0, 0.0, 20.0, 45.0, 89.0])
def test_orientation_counter_clockwise_from_x_on_screen(angle):
    # an elongated capsule whose axis points at `angle` CCW from +x (y axis down)
    lab = as_labels(capsule(48, 48, 20, 6, angle))
    o = measure_regions(lab).compute()["orientation_deg"].iloc[0]
    diff = (o - angle + 90) % 180 - 90
    assert abs(diff) < 1.0
    assert -90 < o <= 90


def test_orientation_sign_convention_explicit():
    # a bar from lower-left to upper-right on screen: positive orientation
    m = np.zeros((40, 40), bool)
    for k in range(-12, 13):
        m[20 - k - 1 : 20 - k + 2, 20 + k - 1 : 20 + k + 2] = True
    o = measure_regions(as_labels(m)).compute()["orientation_deg"].iloc[0]
    assert o == pytest.approx(45.0, abs=1.0)


# ---------------------------------------------------------------- shape descriptors
def test_prism_orientation_and_vertices():
    rng = np.random.default_rng(0)
    errors, vert_err = [], []
    for phi in rng.uniform(0, 360, 24):
        cy, cx = rng.uniform(30, 34, 2)
        m, verts = triangle(cy, cx, 36.0, phi)
        t = measure_regions(as_labels(m), shape="prism").compute().iloc[0]
        got = t.prism_orientation_deg
        assert 0 <= got < 120
        errors.append(abs((got - phi % 120 + 60) % 120 - 60))
        found = np.array([[t[f"vertex{k}_y_nm"], t[f"vertex{k}_x_nm"]] for k in range(3)]) - 0.5
        d = np.hypot(*(found[:, None, :] - verts[None, :, :]).transpose(2, 0, 1))
        vert_err.append(d.min(axis=1).max())
        assert t.edge_length_nm == pytest.approx(36.0, rel=0.1)
    assert np.median(errors) < 3.0, errors
    assert np.max(errors) < 6.0
    assert np.median(vert_err) < 2.0, vert_err


def test_symmetry_strength_separates_triangles_from_discs():
    tri = measure_regions(as_labels(triangle(32, 32, 36.0, 17.0)[0]), shape="prism").compute()
    yy, xx = np.mgrid[:64, :64]
    disc = measure_regions(
        as_labels((yy - 32.2) ** 2 + (xx - 31.7) ** 2 <= 15.0**2), shape="prism"
    ).compute()
    # an equilateral triangle's radius r(theta) has a strong 3rd harmonic; a disc's none
    assert tri.symmetry_strength.iloc[0] > 0.1
    assert disc.symmetry_strength.iloc[0] < 0.02
    assert schema.units(tri)["symmetry_strength"] == "1"


def test_cube_orientation_modulo_90():
    for phi in (10.0, 37.0, 71.0):
        a = np.radians(phi + np.array([0, 90, 180, 270]))
        R = 16.0
        verts = screen_to_image(32.3, 31.7, R * np.cos(a), R * np.sin(a))
        m = polygon2mask((64, 64), verts)
        got = measure_regions(as_labels(m), shape="cube").compute().iloc[0].cube_orientation_deg
        assert abs((got - phi + 45) % 90 - 45) < 3.0


def test_rod_length_width_and_caps():
    rng = np.random.default_rng(1)
    for _ in range(8):
        h, r, ang = rng.uniform(12, 22), rng.uniform(4, 7), rng.uniform(-90, 90)
        m = capsule(48 + rng.uniform(-1, 1), 48 + rng.uniform(-1, 1), h, r, ang)
        t = measure_regions(as_labels(m, attrs={"pixel_size_nm": 0.2}), shape="rod").compute()
        t = t.iloc[0]
        L, W = 2 * (h + r) * 0.2, 2 * r * 0.2
        assert abs(t.rod_length_nm / L - 1) < 0.03, (t.rod_length_nm, L)
        assert abs(t.rod_width_nm / W - 1) < 0.1, (t.rod_width_nm, W)
        for cap in (t.cap_radius_a_nm, t.cap_radius_b_nm):
            assert abs(cap / (r * 0.2) - 1) < 0.2, (cap, r * 0.2)


# ----------------------------------------------------------------- outlines, curvature
def test_closed_curvature_of_sampled_ellipse_is_exact():
    t = np.linspace(0, 2 * np.pi, 4000, endpoint=False)
    a, b = 30.0, 12.0
    pts = resample_closed(np.column_stack([50 - b * np.sin(t), 50 + a * np.cos(t)]), step_px=0.5)
    k = closed_curvature(pts, sigma_px=0.0)
    truth = ellipse_curvature(pts[:, 0], pts[:, 1], 50, 50, a, b, 0.0)
    assert np.max(np.abs(k / truth - 1)) < 0.01


def _ellipse_curvature_errors(noise, curvature_sigma_px, seed=2):
    rng = np.random.default_rng(seed)
    rel = []
    for a, b in [(26, 14), (22, 16), (30, 18)]:
        ang, cy, cx = rng.uniform(-90, 90), 48 + rng.uniform(-1, 1), 48 + rng.uniform(-1, 1)
        p = ellipse_probability(cy, cx, a, b, ang)
        p = np.clip(p + rng.normal(0, noise, p.shape), 0, 1)
        lab = xr.DataArray((p > 0.5).astype(np.int32)[None], dims=DIMS)
        c = measure_contours(
            lab,
            probability=xr.DataArray(p[None], dims=DIMS),
            pixel_size_nm=0.5,
            spacing_px=1.0,
            curvature_sigma_px=curvature_sigma_px,
        ).compute()
        assert c["point"].tolist() == list(range(len(c)))
        steps = np.diff(c.arc_length_nm.to_numpy())
        assert np.allclose(steps, steps[0])  # uniform arc length
        truth = ellipse_curvature(c.y.to_numpy(), c.x.to_numpy(), cy, cx, a, b, ang) / 0.5
        rel.append(np.abs(c.curvature_per_nm.to_numpy() / truth - 1))
    return np.concatenate(rel)


def test_contour_curvature_of_ellipses_within_5_percent():
    # smooth probability map (edge width 1.5 px), default smoothing
    rel = _ellipse_curvature_errors(0.0, 2.0)
    print(
        f"ellipse curvature: median rel err {np.median(rel):.4f}, p95 {np.percentile(rel, 95):.4f}"
    )
    assert np.median(rel) < 0.025
    assert np.percentile(rel, 95) < 0.05
    # white noise (sd 0.01) on the probability: more smoothing along the arc
    rel = _ellipse_curvature_errors(0.01, 3.0)
    print(f"noisy: median rel err {np.median(rel):.4f}, p95 {np.percentile(rel, 95):.4f}")
    assert np.median(rel) < 0.05
    assert np.percentile(rel, 95) < 0.10


def test_contour_from_labels_only_caps_and_straight_sides():
    # capsule: straight sides (curvature 0) and caps of radius 8 px (curvature 1/8)
    ang = np.radians(30.0)
    m = capsule(40, 40, 10, 8, 30.0, n=80)
    c = measure_contours(as_labels(m), spacing_px=1.0, curvature_sigma_px=3.0).compute()
    X, Y = c.x.to_numpy() - 40, -(c.y.to_numpy() - 40)
    s = X * np.cos(ang) + Y * np.sin(ang)
    k = c.curvature_per_nm.to_numpy()
    caps = np.abs(s) > 13
    straight = np.abs(s) < 5
    assert np.median(k[caps]) == pytest.approx(1 / 8, rel=0.2)
    assert np.abs(k[straight]).max() < 0.03
    assert c.arc_length_nm.iloc[-1] == pytest.approx(2 * 20 + 2 * np.pi * 8, rel=0.03)


def test_concave_outline_has_negative_curvature():
    # a disk with a notch: the notch is concave
    n = 80
    yy, xx = np.mgrid[:n, :n]
    m = (yy - 40) ** 2 + (xx - 40) ** 2 <= 20**2
    m &= ~((yy - 40) ** 2 + (xx - 62) ** 2 <= 9**2)
    c = measure_contours(as_labels(m), curvature_sigma_px=2.0).compute()
    notch = c[(c.x > 50) & (abs(c.y - 40) < 3)]
    assert len(notch) and (notch.curvature_per_nm < 0).all()
    far = c[c.x < 25]
    assert (far.curvature_per_nm > 0).all()
    assert far.curvature_per_nm.median() == pytest.approx(1 / 20, rel=0.15)


# --------------------------------------------------------------------- dask layer
def _video(n_frames=5, size=48, seed=0):
    rng = np.random.default_rng(seed)
    lab = np.zeros((n_frames, size, size), np.int32)
    for f in range(n_frames):
        if f == 2:
            continue  # an empty frame in the middle
        for k in range(3):
            rr, cc = disk(rng.uniform(8, size - 8, 2), rng.uniform(3, 6), shape=(size, size))
            lab[f, rr, cc] = k + 1
    img = rng.normal(10, 1, lab.shape)
    return lab, img


@pytest.mark.parametrize("chunks", [1, 5, (2, 3)])
def test_measure_chunk_invariance(chunks):
    lab, img = _video()
    coords = {"frame": np.arange(5) + 10}
    attrs = {"pixel_size_nm": 1.5, "frame_interval_s": 0.2}
    L = xr.DataArray(da.from_array(lab, chunks=(chunks, -1, -1)), dims=DIMS, coords=coords)
    V = xr.DataArray(da.from_array(img, chunks=(2, -1, -1)), dims=DIMS, coords=coords, attrs=attrs)
    got = measure_regions(L, V, shape="rod").compute().reset_index(drop=True)
    expected = _measure_block(
        lab,
        img,
        frames=np.arange(5) + 10,
        times_s=(np.arange(5) + 10) * 0.2,
        pixel_size_nm=1.5,
        shape="rod",
    )
    pd.testing.assert_frame_equal(got, expected)
    assert set(got["frame"]) == {10, 11, 13, 14}
    cont = measure_contours(L, pixel_size_nm=1.5).compute()
    assert sorted(set(cont["frame"])) == [10, 11, 13, 14]


def test_measure_is_lazy_with_schema_meta():
    lab, img = _video()
    L = xr.DataArray(da.from_array(lab, chunks=(2, -1, -1)), dims=DIMS)
    with dask.config.set(scheduler=_raise_on_compute):
        t = measure_regions(L, pixel_size_nm=1.0, shape="prism")
        c = measure_contours(L, pixel_size_nm=1.0)
    assert isinstance(t, dd.DataFrame) and t.npartitions == 3
    assert list(t.columns) == list(schema.regions_columns("prism"))
    assert dict(t.dtypes.astype(str)) == schema.table_dtypes(schema.regions_columns("prism"))
    assert list(c.columns) == list(schema.CONTOURS)


def test_missing_pixel_size_and_bad_labels_raise():
    lab = xr.DataArray(np.zeros((1, 4, 4), np.int32), dims=DIMS)
    with pytest.raises(InputError, match="pixel_size_nm"):
        measure_regions(lab)
    with pytest.raises(InputError, match="integers"):
        measure_regions(lab.astype(float), pixel_size_nm=1.0)
    with pytest.raises(InputError, match="dims"):
        measure_regions(lab.rename(frame="t"), pixel_size_nm=1.0)
    with pytest.raises(InputError, match="shape"):
        measure_regions(lab, video=xr.DataArray(np.zeros((2, 4, 4)), dims=DIMS), pixel_size_nm=1)


# ------------------------------------------------------------------------- Parquet
def test_write_read_table_roundtrip_with_units(tmp_path):
    lab, img = _video()
    L = xr.DataArray(da.from_array(lab, chunks=(2, -1, -1)), dims=DIMS)
    t = measure_regions(L, pixel_size_nm=2.0)
    path = write_table(t, tmp_path / "v.zarr", "regions")
    assert path == tmp_path / "v.zarr" / "tables" / "regions.parquet"
    assert len(list(path.glob("part.*.parquet"))) == 3  # one part per frame chunk
    back = read_table(tmp_path / "v.zarr", "regions")
    pd.testing.assert_frame_equal(
        back.compute().reset_index(drop=True), t.compute().reset_index(drop=True)
    )
    units = column_units(tmp_path / "v.zarr", "regions")
    assert units["x_nm"] == "nm" and units["area_nm2"] == "nm^2" and units["time_s"] == "s"
    with pytest.raises(OutputExistsError):
        write_table(t, tmp_path / "v.zarr", "regions")
    write_table(t.partitions[:1], tmp_path / "v.zarr", "regions", overwrite=True)
    assert len(list(path.glob("part.*.parquet"))) == 1
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp")]
    with pytest.raises(StoreError, match="does not exist"):
        read_table(tmp_path / "v.zarr", "nope")


def test_write_table_part_per_chunk(tmp_path):
    lab, _ = _video()
    L = xr.DataArray(da.from_array(lab, chunks=(2, -1, -1)), dims=DIMS)
    t = measure_regions(L, pixel_size_nm=2.0)
    for i, part in enumerate(t.to_delayed()):
        write_table_part(part.compute(), tmp_path, "regions", i)
    write_table_part(t.partitions[0], tmp_path, "regions", 0)  # a rerun replaces the part
    back = read_table(tmp_path, "regions").compute().reset_index(drop=True)
    pd.testing.assert_frame_equal(back, t.compute().reset_index(drop=True))
    assert column_units(tmp_path, "regions")["area_nm2"] == "nm^2"
    assert not list((tmp_path / "tables" / "regions.parquet").glob(".tmp*"))


def test_failed_write_leaves_nothing(tmp_path):
    def boom(df):
        raise RuntimeError("fail in a task")

    t = dd.from_pandas(schema.empty_regions(), npartitions=1).map_partitions(
        boom, meta=schema.empty_regions()
    )
    with pytest.raises(RuntimeError):
        write_table(t, tmp_path, "regions")
    assert not (tmp_path / "tables" / "regions.parquet").exists()
    assert not list((tmp_path / "tables").glob(".tmp*"))


# --------------------------------------------------------- against the simulator
def _simulated(shape_rows: list[dict], pixel_size_nm: float, seed: int = 0):
    sim = pytest.importorskip("lptem_dask.simulate")
    cfg = sim.SimulationConfig(
        optics=sim.OpticsConfig(image_size_px=128, pixel_size_nm=pixel_size_nm, mtf="none")
    )
    out = sim.render_frame(pd.DataFrame(shape_rows), cfg, seed=seed)
    labels = xr.DataArray(
        out["labels"][None], dims=DIMS, attrs={"pixel_size_nm": float(out["pixel_size_nm"])}
    )
    image = xr.DataArray(out["image"][None].astype(np.float64), dims=DIMS)
    return labels, image, out["truth"]


def test_simulated_prisms_orientation_and_centroid():
    rng = np.random.default_rng(5)
    rows = [
        {
            "y": 20.0 + 29 * (i // 4) + rng.uniform(-2, 2),
            "x": 20.0 + 29 * (i % 4) + rng.uniform(-2, 2),
            "shape": "prism",
            "size_nm": 44.0,
            "orientation_deg": rng.uniform(0, 360),
        }
        for i in range(16)
    ]
    labels, image, truth = _simulated(rows, 2.0)
    t = measure_regions(labels, image, shape="prism").compute().set_index("label")
    truth = truth.set_index("label").loc[t.index]
    err = np.abs((t.prism_orientation_deg - truth.orientation_deg % 120 + 60) % 120 - 60)
    cerr = np.hypot(t.y - truth.y, t.x - truth.x)
    print(
        f"simulated prisms: orientation median error {err.median():.2f} deg, "
        f"centroid median {cerr.median():.3f} px"
    )
    assert len(t) == 16
    assert err.median() < 3.0 and err.max() < 8.0
    assert cerr.median() < 0.5 and cerr.quantile(0.95) < 1.5
    assert (t.mean_intensity < np.median(image.values)).all()  # dark particles


def test_simulated_rods_length():
    rng = np.random.default_rng(6)
    rows = [
        {
            "y": 32.0 + 64 * (i // 2) + rng.uniform(-2, 2),
            "x": 32.0 + 64 * (i % 2) + rng.uniform(-2, 2),
            "shape": "rod",
            "size_nm": rng.uniform(25, 40),
            "diameter_nm": rng.uniform(8, 12),
            "orientation_deg": rng.uniform(-90, 90),
        }
        for i in range(4)
    ]
    labels, _, truth = _simulated(rows, 0.5)
    t = measure_regions(labels, shape="rod").compute().set_index("label")
    truth = truth.set_index("label").loc[t.index]
    rel = np.abs(t.rod_length_nm / truth.size_nm - 1)
    werr = np.abs(t.rod_width_nm / truth.diameter_nm - 1)
    oerr = np.abs((t.orientation_deg - truth.orientation_deg + 90) % 180 - 90)
    print(f"simulated rods: length rel error max {rel.max():.4f}, width {werr.max():.3f}")
    assert len(t) == 4
    assert rel.max() < 0.03
    assert werr.max() < 0.1
    assert oerr.max() < 2.0
