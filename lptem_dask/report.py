"""Self-contained HTML report of one processed video.

``write_report(store)`` writes ``STORE/report/index.html``: metadata, frames with
particle outlines and track IDs (with a scale bar), an overlay movie (animated
GIF), the figures and numbers of every analysis found under ``STORE/results``,
and summaries of the region and track tables. Every image is embedded as a data
URI, so the page is one file that can be mailed or archived. Figures are also
saved beside it as PNG and SVG.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import StoreError
from .store import IMAGE, LABELS, atomic_path, mark_aux_dir, open_store_dataset, table_path

__all__ = ["write_report", "overlay_frame", "add_scale_bar"]

logger = logging.getLogger(__name__)


def _png_data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def _to_uint8(frame: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    f = np.asarray(frame, dtype=np.float64)
    finite = np.isfinite(f)
    if lo is None or hi is None:
        vals = f[finite] if finite.any() else np.zeros(1)
        lo, hi = np.percentile(vals, [0.5, 99.5])
    if hi <= lo:
        hi = lo + 1.0
    out = np.clip((np.where(finite, f, lo) - lo) / (hi - lo), 0, 1)
    return (out * 255).astype(np.uint8)


def overlay_frame(
    frame: np.ndarray,
    labels: np.ndarray | None,
    *,
    lo: float | None = None,
    hi: float | None = None,
    color: tuple[int, int, int] = (255, 200, 0),
) -> np.ndarray:
    """Grey frame as RGB uint8 with the outline of every labelled particle drawn in ``color``.

    Parameters
    ----------
    frame : (y, x) array
        Intensities of any dtype.
    labels : (y, x) int array, optional
        Particle instances (0 = background).
    """
    from skimage.segmentation import find_boundaries

    grey = _to_uint8(frame, lo, hi)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    if labels is not None and np.any(labels):
        edge = find_boundaries(np.asarray(labels), mode="inner")
        rgb[edge] = color
    return rgb


def add_scale_bar(ax, pixel_size_nm: float, width_px: int, *, known: bool = True) -> None:
    """Draw a scale bar of a round length (nm) in the lower right of an image axis."""
    if not known or not np.isfinite(pixel_size_nm) or pixel_size_nm <= 0:
        return
    target = 0.2 * width_px * pixel_size_nm
    exp = 10 ** np.floor(np.log10(target))
    nice = max(v * exp for v in (1, 2, 5) if v * exp <= target) if target >= exp else exp
    length_px = nice / pixel_size_nm
    x1 = width_px * 0.95
    y = width_px * 0.05  # placed relative to the top; axis is image-oriented
    ax.plot([x1 - length_px, x1], [ax.get_ylim()[0] - y] * 2, color="white", lw=3)
    label = f"{nice:g} nm" if nice < 1000 else f"{nice / 1000:g} µm"
    ax.text(
        x1 - length_px / 2,
        ax.get_ylim()[0] - y - 0.02 * width_px,
        label,
        color="white",
        ha="center",
        va="bottom",
        fontsize=9,
    )


def _fig_bytes(fig, fmt: str) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _frames_figure(ds, frames: list[int], tracks: pd.DataFrame | None, px: float, known: bool):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n = len(frames)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.4), squeeze=False)
    img = ds[IMAGE]
    sample = np.asarray(img.isel(frame=frames[0]).values, dtype=float)
    lo, hi = np.nanpercentile(sample, [0.5, 99.5]) if np.isfinite(sample).any() else (0, 1)
    for ax, f in zip(axes[0], frames, strict=True):
        lab = np.asarray(ds[LABELS].isel(frame=f).values) if LABELS in ds else None
        ax.imshow(overlay_frame(img.isel(frame=f).values, lab, lo=lo, hi=hi))
        if tracks is not None and len(tracks):
            sub = tracks[tracks["frame"] == int(ds["frame"].values[f])]
            for _, r in sub.iterrows():
                ax.text(
                    r["x"],
                    r["y"],
                    str(int(r["particle"])),
                    color="cyan",
                    fontsize=7,
                    ha="center",
                    va="center",
                )
        t = ds["time"].values[f] if "time" in ds.coords else f
        ax.set_title(f"frame {int(ds['frame'].values[f])}  t = {float(t):.3g} s", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        add_scale_bar(ax, px, img.sizes["x"], known=known)
    fig.tight_layout()
    return fig


def _movie_gif(ds, max_frames: int = 60, max_side: int = 256) -> bytes:
    import imageio.v3 as iio
    from skimage.transform import resize

    nf = ds.sizes["frame"]
    idx = np.unique(np.linspace(0, nf - 1, min(nf, max_frames)).round().astype(int))
    sample = np.asarray(ds[IMAGE].isel(frame=int(idx[0])).values, dtype=float)
    lo, hi = np.nanpercentile(sample, [0.5, 99.5]) if np.isfinite(sample).any() else (0, 1)
    frames = []
    for f in idx:
        lab = np.asarray(ds[LABELS].isel(frame=int(f)).values) if LABELS in ds else None
        rgb = overlay_frame(ds[IMAGE].isel(frame=int(f)).values, lab, lo=lo, hi=hi)
        scale = min(1.0, max_side / max(rgb.shape[:2]))
        if scale < 1:
            rgb = (
                resize(
                    rgb,
                    (int(rgb.shape[0] * scale), int(rgb.shape[1] * scale)),
                    order=0,
                    preserve_range=True,
                    anti_aliasing=False,
                )
            ).astype(np.uint8)
        frames.append(rgb)
    return iio.imwrite("<bytes>", np.stack(frames), extension=".gif", duration=100, loop=0)


def _table_html(df: pd.DataFrame, max_rows: int = 20) -> str:
    return df.head(max_rows).to_html(
        index=False, float_format=lambda v: f"{v:.4g}", border=0, classes="tbl"
    )


def _results_sections(results: Path) -> list[str]:
    out: list[str] = []
    if not results.is_dir():
        return out
    for sub in sorted(p for p in results.iterdir() if p.is_dir()):
        parts = [f"<h2>Analysis: {html.escape(sub.name)}</h2>"]
        for js in sorted(sub.glob("*.json")):
            try:
                data = json.loads(js.read_text())
            except (OSError, ValueError):
                continue
            flat = pd.json_normalize(data, sep=".") if isinstance(data, dict) else None
            if flat is not None and flat.shape[1]:
                tbl = flat.T.reset_index()
                tbl.columns = ["quantity", "value"]
                tbl["value"] = tbl["value"].map(
                    lambda v: v if not isinstance(v, list) or len(v) < 8 else f"[{len(v)} values]"
                )
                parts.append(f"<h3>{html.escape(js.name)}</h3>" + _table_html(tbl, 60))
        for png in sorted(sub.glob("*.png")):
            parts.append(
                f'<figure><img src="{_png_data_uri(png.read_bytes())}" alt="{html.escape(png.stem)}">'
                f"<figcaption>{html.escape(png.stem)}</figcaption></figure>"
            )
        out.append("\n".join(parts))
    return out


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
h1{font-size:1.6em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table.tbl{border-collapse:collapse;font-size:.85em} .tbl td,.tbl th{padding:2px 8px;border-bottom:1px solid #eee}
img{max-width:100%} figure{display:inline-block;margin:.5em} figcaption{font-size:.8em;color:#555}
"""


def write_report(
    store: str | os.PathLike,
    *,
    overwrite: bool = False,
    n_frames_shown: int = 4,
) -> Path:
    """Write ``STORE/report/index.html`` (plus PNG/SVG figures) and return its path.

    Parameters
    ----------
    store : path
        A processed-video store (see :mod:`lptem_dask.store`).
    overwrite : bool
        Replace an existing report.
    n_frames_shown : int
        Frames shown with outlines and track IDs.

    Raises
    ------
    StoreError
        If ``store`` has no ``image`` array.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    store = Path(store)
    ds = open_store_dataset(store)
    if IMAGE not in ds:
        raise StoreError(f"store {str(store)!r} has no `image` array; run `lptem ingest` first")
    attrs = dict(ds[IMAGE].attrs)
    px = float(attrs.get("pixel_size_nm", np.nan))
    known = bool(attrs.get("pixel_size_known", True))
    regions = tracks = None
    if table_path(store, "regions").exists():
        regions = pd.read_parquet(table_path(store, "regions"))
    if table_path(store, "tracks").exists():
        tracks = pd.read_parquet(table_path(store, "tracks"))

    nf = ds.sizes["frame"]
    frames = sorted(
        set(np.linspace(0, nf - 1, min(n_frames_shown, nf)).round().astype(int).tolist())
    )
    with atomic_path(store / "report", overwrite=overwrite) as tmp:
        mark_aux_dir(tmp)
        fig = _frames_figure(ds, frames, tracks, px, known)
        png = _fig_bytes(fig, "png")
        (tmp / "frames.png").write_bytes(png)
        (tmp / "frames.svg").write_bytes(_fig_bytes(fig, "svg"))
        plt.close(fig)
        gif = _movie_gif(ds)
        (tmp / "overlay.gif").write_bytes(gif)

        meta = {
            "source": attrs.get("source", ""),
            "frames": nf,
            "frame shape (y, x) px": f"{ds.sizes['y']} × {ds.sizes['x']}",
            "dtype": str(ds[IMAGE].dtype),
            "pixel size (nm)": px if known else f"{px} (not known: pixel units)",
            "frame interval (s)": attrs.get("frame_interval_s", ""),
            "dose rate (e⁻/Å²/s)": attrs.get("dose_rate_e_per_A2_s", "unknown"),
        }
        body = [
            f"<h1>LPTEM report: {html.escape(store.name)}</h1>",
            "<h2>Video</h2>",
            _table_html(
                pd.DataFrame({"quantity": list(meta), "value": [str(v) for v in meta.values()]})
            ),
        ]
        body.append("<h2>Frames with outlines and track IDs</h2>")
        body.append(f'<img id="frames" src="{_png_data_uri(png)}" alt="frames with outlines">')
        body.append("<h2>Overlay movie</h2>")
        body.append(
            f'<img id="movie" src="{_png_data_uri(gif, "image/gif")}" alt="overlay movie" style="width:min(512px,100%);image-rendering:pixelated">'
        )
        if regions is not None:
            per_frame = regions.groupby("frame").size()
            summ = pd.DataFrame(
                {
                    "quantity": [
                        "rows (particles × frames)",
                        "frames with particles",
                        "particles per frame (median)",
                    ],
                    "value": [
                        len(regions),
                        int(per_frame.size),
                        float(per_frame.median()) if per_frame.size else 0.0,
                    ],
                }
            )
            body.append("<h2>Regions</h2>" + _table_html(summ))
        if tracks is not None and len(tracks):
            lengths = tracks.groupby("particle").size()
            summ = pd.DataFrame(
                {
                    "quantity": ["tracks", "median length (frames)", "longest (frames)"],
                    "value": [int(lengths.size), float(lengths.median()), int(lengths.max())],
                }
            )
            body.append("<h2>Tracks</h2>" + _table_html(summ))
        body.extend(_results_sections(store / "results"))
        history = attrs.get("history", [])
        if history:
            body.append(
                "<h2>History</h2><pre>"
                + html.escape(json.dumps(history, indent=1, default=str))
                + "</pre>"
            )
        page = (
            "<!DOCTYPE html><html><head><meta charset='utf-8'><title>LPTEM report "
            f"{html.escape(store.name)}</title><style>{_CSS}</style></head><body>"
            + "\n".join(body)
            + "</body></html>"
        )
        (tmp / "index.html").write_text(page, encoding="utf-8")
    logger.info("report written: %s", store / "report" / "index.html")
    return store / "report" / "index.html"
