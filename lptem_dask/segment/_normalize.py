"""Robust per-image normalisation and polarity for the U-Net.

One definition serves training and inference, so the network always sees the
same intensity scale whatever the input dtype (uint8, uint16, float, signed)
or range.

Normalisation ("percentile", the default)
    ``z = (x - p_lo) / (p_hi - p_lo)`` with ``p_lo``, ``p_hi`` the 1st and 99th
    percentiles of the frame (after polarity: particles dark), clipped to
    ``[-1, 2]``. An affine change of the input (``a * x + b`` with ``a > 0``)
    leaves ``z`` unchanged, which makes the result dtype-invariant. A constant
    frame gives zeros.

Polarity
    ``"dark"``: particles darker than the background (bright-field TEM), used
    as is. ``"bright"``: particles brighter (dark-field TEM, ADF-STEM); the
    frame is negated first. ``"auto"``: decided by comparing the tails of the
    intensity distribution around the median: particles form the longer tail,
    so the frame is taken as "dark" when ``median - p0.5 >= p99.5 - median``
    and as "bright" otherwise (:func:`decide_polarity`). For a video, the
    decision is taken once from a sample of frames.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from ..errors import InputError

__all__ = ["normalize_frame", "decide_polarity", "POLARITIES", "NORMALIZATION"]

Polarity = Literal["dark", "bright", "auto"]
POLARITIES = ("dark", "bright", "auto")

#: description stored in model cards
NORMALIZATION: dict[str, Any] = {
    "method": "percentile",
    "low": 1.0,
    "high": 99.0,
    "clip": [-1.0, 2.0],
}


def check_polarity(polarity: str) -> str:
    if polarity not in POLARITIES:
        raise InputError(
            f"`polarity` must be one of {POLARITIES}, got {polarity!r}; use 'dark' for "
            "bright-field TEM, 'bright' for dark-field TEM or ADF-STEM"
        )
    return polarity


def decide_polarity(frames: np.ndarray) -> Literal["dark", "bright"]:
    """Whether particles are dark or bright, from the tails of the histogram.

    Parameters
    ----------
    frames : ndarray (..., y, x), any real dtype
        One or more frames; the decision is taken by majority over frames.
    """
    arr = np.asarray(frames, dtype=np.float64)
    arr = arr.reshape((-1,) + arr.shape[-2:])
    votes = 0
    for f in arr:
        lo, med, hi = np.percentile(f, [0.5, 50.0, 99.5])
        votes += 1 if (med - lo) >= (hi - med) else -1
    return "dark" if votes >= 0 else "bright"


def _integer_percentiles(x: np.ndarray, q: tuple[float, float]) -> np.ndarray | None:
    """``np.percentile(x, q)`` (linear method) of an integer frame from its histogram.

    The same numbers as ``np.percentile``, without sorting: the order statistics
    come from the cumulative histogram. ``None`` when the value range is too wide
    for a histogram (then the caller sorts).
    """
    flat = x.ravel()
    lo, hi = int(flat.min()), int(flat.max())
    if hi - lo > 1 << 20:
        return None
    counts = np.bincount((flat.astype(np.int64) - lo) if lo else flat, minlength=1)
    cum = np.cumsum(counts)
    n = flat.size
    out = np.empty(len(q))
    for k, qk in enumerate(q):
        pos = qk / 100.0 * (n - 1)
        i0 = int(np.floor(pos))
        i1 = min(i0 + 1, n - 1)
        v0 = np.searchsorted(cum, i0, side="right") + lo
        v1 = np.searchsorted(cum, i1, side="right") + lo
        out[k] = v0 + (pos - i0) * (v1 - v0)
    return out


def normalize_frame(frame: np.ndarray, *, polarity: str = "dark") -> np.ndarray:
    """Normalise one frame for the network (particles dark, background ~1).

    Parameters
    ----------
    frame : ndarray (y, x), any real dtype
    polarity : {"dark", "bright"}
        "auto" must be resolved first with :func:`decide_polarity`.

    Returns
    -------
    ndarray (y, x) float32
        ``(x - p1) / (p99 - p1)`` clipped to ``[-1, 2]``.
    """
    x = np.asarray(frame)
    if x.dtype.kind not in "biuf":
        raise InputError(f"frames must be real numbers, got dtype {x.dtype}")
    if polarity not in ("dark", "bright"):
        raise InputError(f"`polarity` must be resolved to 'dark' or 'bright', got {polarity!r}")
    q = (NORMALIZATION["low"], NORMALIZATION["high"])
    if polarity == "bright":
        q = (100.0 - q[1], 100.0 - q[0])
    lohi = _integer_percentiles(x, q) if x.dtype.kind in "biu" else None
    x = x.astype(np.float64, copy=False)
    if not np.all(np.isfinite(x)):
        finite = np.isfinite(x)
        fill = float(np.median(x[finite])) if finite.any() else 0.0
        x = np.where(finite, x, fill)
    if lohi is None:
        lohi = np.percentile(x, q)
    lo, hi = float(lohi[0]), float(lohi[1])
    if polarity == "bright":  # percentiles of -x are minus the mirrored ones of x
        x = -x
        lo, hi = -hi, -lo
    span = hi - lo
    if not span > 0:
        span = float(x.max() - x.min())
        lo = float(x.min())
    if not span > 0:
        return np.zeros(x.shape, np.float32)
    z = (x - lo) / span
    c0, c1 = NORMALIZATION["clip"]
    return np.clip(z, c0, c1).astype(np.float32)
