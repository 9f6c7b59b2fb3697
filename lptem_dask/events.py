"""Events between consecutive frames from label overlaps: appear, disappear, merge, split.

Linking by nearest neighbours (trackpy) gives one-to-one identities and cannot
say that two particles became one. Here the regions of frames ``t`` and
``t + 1`` are joined where their pixels overlap (a bipartite overlap graph,
pairs below ``min_overlap_px`` or below ``min_overlap_fraction`` of the smaller
region ignored); each connected component of that graph is one event:

============  ===============  =========================================
kind          regions t -> t+1  meaning
============  ===============  =========================================
continue      1 -> 1            the same object
disappear     1 -> 0            dissolved, left the field or lost
appear        0 -> 1            nucleated, entered the field or found
merge         k -> 1 (k >= 2)   parents joined into one child
split         1 -> k (k >= 2)   one parent broke into children
complex       k -> m (both>=2)  rearrangement (e.g. merge and split at once)
============  ===============  =========================================

Each region carries a ``lineage`` id: kept through ``continue``; a child of
any other event starts a new lineage whose parents' lineages are recorded in
the event, so the full genealogy can be walked back.

The overlap counts of each pair of frames are computed per frame chunk (a pure
numpy kernel on the chunk plus the next frame) with Dask; the lineage pass is
sequential over the (small) overlap table.
"""

from __future__ import annotations

import logging
from typing import Any

import dask
import numpy as np
import pandas as pd
import xarray as xr
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .errors import InputError

__all__ = ["EVENT_KINDS", "overlap_table", "frame_overlaps", "label_events"]

logger = logging.getLogger(__name__)

EVENT_KINDS: tuple[str, ...] = ("continue", "disappear", "appear", "merge", "split", "complex")

_OVERLAP_COLUMNS = {
    "frame": "int64",
    "label_a": "int32",
    "label_b": "int32",
    "overlap_px": "int64",
    "area_a_px": "int64",
    "area_b_px": "int64",
}


def overlap_table(a: np.ndarray, b: np.ndarray, *, frame: int = 0) -> pd.DataFrame:
    """Overlaps of the regions of two label images (pure kernel).

    Parameters
    ----------
    a, b : ndarray of int, shape (y, x)
        Label images of frames ``frame`` and ``frame + 1`` (0 = background).
    frame : int
        Frame number of ``a``.

    Returns
    -------
    pandas.DataFrame
        One row per overlapping pair: ``frame``, ``label_a``, ``label_b``,
        ``overlap_px``, ``area_a_px``, ``area_b_px``; regions with no partner
        get a row with the other label 0 (``overlap_px`` 0).

    Examples
    --------
    >>> a = np.array([[1, 1, 0, 2]]); b = np.array([[0, 3, 3, 0]])
    >>> overlap_table(a, b)[["label_a", "label_b", "overlap_px"]].values.tolist()
    [[1, 3, 1], [2, 0, 0]]
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise InputError(f"label images must have the same shape, got {a.shape} and {b.shape}")
    aa = a.ravel().astype(np.int64)
    bb = b.ravel().astype(np.int64)
    area_a = np.bincount(aa)
    area_b = np.bincount(bb)
    both = (aa > 0) & (bb > 0)
    big = int(max(bb.max(initial=0), 0)) + 1
    key, cnt = np.unique(aa[both] * big + bb[both], return_counts=True)
    la, lb = key // big, key % big
    rows = [pd.DataFrame({"label_a": la, "label_b": lb, "overlap_px": cnt})]
    labs_a = np.nonzero(area_a)[0]
    labs_a = labs_a[labs_a > 0]
    labs_b = np.nonzero(area_b)[0]
    labs_b = labs_b[labs_b > 0]
    lone_a = np.setdiff1d(labs_a, la)
    lone_b = np.setdiff1d(labs_b, lb)
    rows.append(pd.DataFrame({"label_a": lone_a, "label_b": 0, "overlap_px": 0}))
    rows.append(pd.DataFrame({"label_a": 0, "label_b": lone_b, "overlap_px": 0}))
    df = pd.concat(rows, ignore_index=True)
    df["area_a_px"] = np.where(
        df["label_a"] > 0, area_a[df["label_a"].clip(upper=len(area_a) - 1)], 0
    )
    df["area_b_px"] = np.where(
        df["label_b"] > 0, area_b[df["label_b"].clip(upper=len(area_b) - 1)], 0
    )
    df.insert(0, "frame", int(frame))
    return df.astype(_OVERLAP_COLUMNS).reset_index(drop=True)


def _overlaps_block(block: np.ndarray, frames: np.ndarray) -> pd.DataFrame:
    """Overlap tables of consecutive frames of one block (its last frame is the next chunk's first)."""
    parts = [
        overlap_table(block[i], block[i + 1], frame=int(frames[i])) for i in range(len(block) - 1)
    ]
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in _OVERLAP_COLUMNS.items()})
    return pd.concat(parts, ignore_index=True)


def frame_overlaps(labels: xr.DataArray) -> Any:
    """Overlap tables of every pair of consecutive frames (lazy dask DataFrame).

    Parameters
    ----------
    labels : xr.DataArray of int, dims (frame, y, x)

    Returns
    -------
    dask.dataframe.DataFrame
        Columns of :func:`overlap_table`; one partition per frame chunk.
    """
    import dask.dataframe as dd

    if not isinstance(labels, xr.DataArray) or tuple(labels.dims) != ("frame", "y", "x"):
        raise InputError(
            "`labels` must be an xr.DataArray with dims ('frame', 'y', 'x'), got "
            f"{type(labels).__name__} with dims {getattr(labels, 'dims', None)}"
        )
    if labels.dtype.kind not in "iu":
        raise InputError(f"`labels` must hold integers, got dtype {labels.dtype}")
    import dask.array as da

    data = labels.data if isinstance(labels.data, da.Array) else da.from_array(labels.data)
    frames = (
        labels["frame"].to_numpy() if "frame" in labels.coords else np.arange(labels.sizes["frame"])
    )
    n = data.shape[0]
    parts = []
    start = 0
    for c in data.chunks[0]:
        stop = min(start + c + 1, n)
        if stop - start >= 2:
            parts.append(
                dask.delayed(_overlaps_block, pure=True)(data[start:stop], frames[start:stop])
            )
        start += c
    meta = pd.DataFrame({c: pd.Series(dtype=t) for c, t in _OVERLAP_COLUMNS.items()})
    if not parts:
        return dd.from_pandas(meta, npartitions=1)
    return dd.from_delayed(parts, meta=meta, verify_meta=False)


def label_events(
    labels: xr.DataArray | np.ndarray,
    *,
    min_overlap_px: int = 1,
    min_overlap_fraction: float = 0.1,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Events between consecutive frames and the lineage of every region.

    Parameters
    ----------
    labels : xr.DataArray (frame, y, x) or ndarray of int
        Instance labels per frame (0 = background).
    min_overlap_px : int
        Overlaps of fewer pixels are ignored.
    min_overlap_fraction : float
        Overlaps smaller than this fraction of the smaller of the two regions
        are ignored (touching or jittering neighbours are not merges).

    Returns
    -------
    events : pandas.DataFrame
        One row per event: ``frame`` (frame of the children, t + 1),
        ``kind`` (see :data:`EVENT_KINDS`), ``parents`` and ``children``
        (lists of labels at t and t + 1), ``parent_lineages`` and
        ``child_lineages`` (lists of lineage ids).
    lineage : pandas.DataFrame
        One row per region per frame: ``frame``, ``label``, ``lineage``.

    Examples
    --------
    >>> lab = np.zeros((3, 1, 6), np.int32)
    >>> lab[0, 0, :2] = 1; lab[0, 0, 4:] = 2          # two particles
    >>> lab[1, 0, :2] = 1; lab[1, 0, 2:] = 2          # 2 grows into contact
    >>> lab[2, 0, :] = 1                              # they merge
    >>> ev, lin = label_events(lab)
    >>> ev["kind"].tolist()
    ['continue', 'continue', 'merge']
    """
    if isinstance(labels, np.ndarray):
        labels = xr.DataArray(labels, dims=("frame", "y", "x"))
    frames = (
        labels["frame"].to_numpy() if "frame" in labels.coords else np.arange(labels.sizes["frame"])
    )
    ov = frame_overlaps(labels).compute()
    ev_rows: list[dict[str, Any]] = []
    lin_rows: list[tuple[int, int, int]] = []
    next_id = 0
    lineage: dict[int, int] = {}
    first = np.asarray(labels.isel(frame=0).values)
    for lab in np.unique(first[first > 0]):
        lineage[int(lab)] = next_id
        lin_rows.append((int(frames[0]), int(lab), next_id))
        next_id += 1
    by_frame = {int(f): g for f, g in ov.groupby("frame")}
    for fi in range(len(frames) - 1):
        f, f1 = int(frames[fi]), int(frames[fi + 1])
        g = by_frame.get(f)
        new_lineage: dict[int, int] = {}
        if g is None or not len(g):
            lineage = new_lineage
            continue
        labs_a = np.unique(g.loc[g["label_a"] > 0, "label_a"]).astype(int)
        labs_b = np.unique(g.loc[g["label_b"] > 0, "label_b"]).astype(int)
        ia = {int(v): i for i, v in enumerate(labs_a)}
        ib = {int(v): i + len(labs_a) for i, v in enumerate(labs_b)}
        pair = g[(g["label_a"] > 0) & (g["label_b"] > 0)]
        smaller = np.minimum(pair["area_a_px"], pair["area_b_px"]).to_numpy()
        keep = (pair["overlap_px"].to_numpy() >= min_overlap_px) & (
            pair["overlap_px"].to_numpy() >= min_overlap_fraction * smaller
        )
        pair = pair[keep]
        n = len(labs_a) + len(labs_b)
        r = [ia[int(v)] for v in pair["label_a"]]
        c = [ib[int(v)] for v in pair["label_b"]]
        G = coo_matrix((np.ones(len(r)), (r, c)), shape=(n, n))
        _, comp = connected_components(G, directed=False)
        for cc in np.unique(comp):
            members = np.nonzero(comp == cc)[0]
            par = sorted(int(labs_a[m]) for m in members if m < len(labs_a))
            chi = sorted(int(labs_b[m - len(labs_a)]) for m in members if m >= len(labs_a))
            if len(par) == 1 and len(chi) == 1:
                kind = "continue"
            elif not chi:
                kind = "disappear"
            elif not par:
                kind = "appear"
            elif len(chi) == 1:
                kind = "merge"
            elif len(par) == 1:
                kind = "split"
            else:
                kind = "complex"
            plin = [lineage.setdefault(p, -1) for p in par]
            if kind == "continue":
                clin = plin[:]
            else:
                clin = list(range(next_id, next_id + len(chi)))
                next_id += len(chi)
            for ch, li in zip(chi, clin, strict=True):
                new_lineage[ch] = li
                lin_rows.append((f1, ch, li))
            ev_rows.append(
                {
                    "frame": f1,
                    "kind": kind,
                    "parents": par,
                    "children": chi,
                    "parent_lineages": plin,
                    "child_lineages": clin,
                }
            )
        lineage = new_lineage
    events = pd.DataFrame(
        ev_rows,
        columns=["frame", "kind", "parents", "children", "parent_lineages", "child_lineages"],
    )
    events = events.astype({"frame": "int64", "kind": "object"})
    lin = pd.DataFrame(lin_rows, columns=["frame", "label", "lineage"]).astype(
        {"frame": "int64", "label": "int32", "lineage": "int64"}
    )
    logger.info("events: %s", events["kind"].value_counts().to_dict() if len(events) else {})
    return events, lin
