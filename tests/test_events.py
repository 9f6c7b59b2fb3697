"""Events from label overlaps: kinds, lineage, chunking invariance, laziness, assembly truth."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from lptem_dask.errors import InputError
from lptem_dask.events import EVENT_KINDS, frame_overlaps, label_events, overlap_table
from lptem_dask.simulate.assembly import AssemblyConfig, simulate_assembly


def _disk(img, cy, cx, r, lab):
    y, x = np.ogrid[: img.shape[0], : img.shape[1]]
    img[(y - cy) ** 2 + (x - cx) ** 2 <= r * r] = lab


def _story() -> np.ndarray:
    """5 frames, 40x60: A and B merge; C splits; D disappears; E appears; F stays."""
    lab = np.zeros((5, 40, 60), np.int32)
    for f in range(5):
        # A (left) and B approach and merge at frame 3
        if f < 3:
            _disk(lab[f], 10, 8 + f, 4, 1)
            _disk(lab[f], 10, 22 - f, 4, 2)
        else:
            lab[f, 6:15, 8:22] = 7
        # C splits at frame 2
        if f < 2:
            lab[f, 25:30, 5:25] = 3
        else:
            lab[f, 25:30, 5:13] = 4
            lab[f, 25:30, 17:25] = 5
        # D lives in frames 0..1
        if f < 2:
            _disk(lab[f], 10, 45, 3, 6)
        # E appears at frame 3
        if f >= 3:
            _disk(lab[f], 30, 45, 3, 9)
        _disk(lab[f], 35, 55, 2, 8)  # F: static
    return lab


def test_kinds_and_lineage():
    ev, lin = label_events(_story())
    kinds = ev.groupby("frame")["kind"].apply(sorted).to_dict()
    assert kinds[1] == ["continue"] * 5
    assert kinds[2] == ["continue"] * 3 + ["disappear", "split"]
    assert kinds[3] == ["appear", "continue", "continue", "continue", "merge"]
    assert kinds[4] == ["continue"] * 5
    merge = ev[ev["kind"] == "merge"].iloc[0]
    assert merge["parents"] == [1, 2] and merge["children"] == [7]
    split = ev[ev["kind"] == "split"].iloc[0]
    assert split["parents"] == [3] and split["children"] == [4, 5]
    # lineage: continue keeps the id, events start new ones and remember their parents
    lid = lin.set_index(["frame", "label"])["lineage"]
    assert lid[(0, 8)] == lid[(4, 8)]
    assert merge["parent_lineages"] == [lid[(2, 1)], lid[(2, 2)]]
    assert merge["child_lineages"] == [lid[(3, 7)]] and lid[(3, 7)] == lid[(4, 7)]
    assert lid[(3, 7)] not in (lid[(2, 1)], lid[(2, 2)])
    assert split["parent_lineages"] == [lid[(0, 3)]]
    assert set(ev["kind"]) <= set(EVENT_KINDS)


def test_complex_and_small_overlaps():
    lab = np.zeros((2, 10, 30), np.int32)
    lab[0, :, 0:10] = 1
    lab[0, :, 10:20] = 2
    lab[1, :, 5:15] = 3  # overlaps 1 and 2
    lab[1, :, 15:25] = 4  # overlaps 2
    ev, _ = label_events(lab)
    assert ev["kind"].tolist() == ["complex"]
    # a sliver of overlap (10% of the smaller region) is not a link
    lab2 = np.zeros((2, 10, 30), np.int32)
    lab2[0, :, 0:10] = 1
    lab2[1, :, 9:19] = 2
    ev2, _ = label_events(lab2, min_overlap_fraction=0.2)
    assert sorted(ev2["kind"]) == ["appear", "disappear"]
    assert label_events(lab2, min_overlap_fraction=0.05)[0]["kind"].tolist() == ["continue"]


def test_overlap_table_kernel():
    a = np.array([[1, 1, 0, 2, 2]])
    b = np.array([[3, 0, 0, 0, 4]])
    t = overlap_table(a, b, frame=5)
    assert t[["label_a", "label_b", "overlap_px"]].values.tolist() == [[1, 3, 1], [2, 4, 1]]
    assert t["area_a_px"].tolist() == [2, 2] and t["frame"].unique().tolist() == [5]
    with pytest.raises(InputError):
        overlap_table(a, b[:, :3])
    with pytest.raises(InputError):
        frame_overlaps(xr.DataArray(np.zeros((2, 3, 3)), dims=("frame", "y", "x")))


@pytest.mark.parametrize("chunk", [1, 2, 5])
def test_chunking_invariance_and_laziness(chunk):
    lab = _story()
    arr = xr.DataArray(da.from_array(lab, chunks=(chunk, 40, 60)), dims=("frame", "y", "x"))

    def boom(*args, **kwargs):
        raise AssertionError("frame_overlaps computed while building its graph")

    with dask.config.set(scheduler=boom):
        lazy = frame_overlaps(arr)
    got = lazy.compute().sort_values(["frame", "label_a", "label_b"]).reset_index(drop=True)
    want = pd.concat([overlap_table(lab[i], lab[i + 1], frame=i) for i in range(4)])
    want = want.sort_values(["frame", "label_a", "label_b"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want)
    ev, _ = label_events(arr)
    ev0, _ = label_events(lab)
    pd.testing.assert_frame_equal(ev, ev0)


def test_assembly_chain_labels_give_the_truth_merges():
    # frames close enough that a particle moves < its size between frames
    # (each bond in its final chain moves it by (open_gap - bond_gap) / 2 = 5 nm)
    cfg = AssemblyConfig(
        law="second_order",
        rate_constant_per_s=1e-3,
        n_monomers=80,
        n_frames=25,
        frame_interval_s=0.5,
    )
    truth = simulate_assembly(cfg, seed=5)
    n = truth.image_size_px
    h = cfg.edge_nm / 2 / cfg.pixel_size_nm
    lab = np.zeros((cfg.n_frames, n, n), np.int32)
    for row in truth.particles.itertuples():
        y0, y1 = int(round(row.y - h + 0.5)), int(round(row.y + h + 0.5))
        x0, x1 = int(round(row.x - h + 0.5)), int(round(row.x + h + 0.5))
        lab[row.frame, y0:y1, x0:x1] = row.chain + 1
    # chain labels: bonded neighbours are 1 px apart, so draw each chain as one region
    for f in range(cfg.n_frames):
        for c, g in truth.particles[truth.particles["frame"] == f].groupby("chain"):
            y0, y1 = int(round(g["y"].min() - h + 0.5)), int(round(g["y"].max() + h + 0.5))
            x0, x1 = int(round(g["x"].min() - h + 0.5)), int(round(g["x"].max() + h + 0.5))
            lab[f, y0:y1, x0:x1] = c + 1
    ev, _ = label_events(lab)
    n_chains = truth.chains().groupby("frame").size().to_numpy()
    for f in range(1, cfg.n_frames):
        e = ev[ev["frame"] == f]
        assert set(e["kind"]) <= {"continue", "merge"}
        merged = e[e["kind"] == "merge"]
        lost = sum(len(p) for p in merged["parents"]) - len(merged)
        assert lost == n_chains[f - 1] - n_chains[f]
    assert (ev["kind"] == "merge").sum() > 5
