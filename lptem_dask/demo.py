"""``lptem demo``: the main job on embedded defaults, with no input files.

Simulates a short LPTEM video with known ground truth, ingests it into a
chunked Zarr store on a local Dask cluster, and prints what ``lptem info``
says about the store.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

__all__ = ["run_demo"]

logger = logging.getLogger(__name__)


def _demo_video(n_frames: int = 24, size: int = 128, seed: int = 0) -> np.ndarray:
    """A small noisy video of dark discs drifting on a bright background (uint16)."""
    try:
        from .simulate import simulate_video  # type: ignore[attr-defined]

        video, _truth = simulate_video("brownian", None, seed=seed)
        return np.asarray(video.values)
    except (ImportError, AttributeError, TypeError):
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[:size, :size]
        centres = rng.uniform(16, size - 16, size=(6, 2))
        frames = []
        for _ in range(n_frames):
            centres += rng.normal(0, 1.0, size=centres.shape)
            t = np.zeros((size, size))
            for cy, cx in centres:
                t += np.clip(8.0**2 - (yy - cy) ** 2 - (xx - cx) ** 2, 0, None) ** 0.5
            mean = 1200.0 * np.exp(-t / 85.0)
            frames.append(rng.poisson(mean))
        return np.asarray(frames, dtype=np.uint16)


def run_demo(out: Path | str = "demo_out", *, overwrite: bool = True) -> dict:
    """Run the demo and return what ``lptem info`` reports on its store."""
    import tifffile

    from .cli import format_info
    from .io import describe, ingest, open_video

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tif = out / "demo_video.tif"
    store = out / "demo_video.zarr"
    frames = _demo_video()
    tifffile.imwrite(
        tif,
        frames,
        imagej=True,
        resolution=(1 / 2.09, 1 / 2.09),
        metadata={"unit": "nm", "finterval": 0.1, "axes": "TYX"},
    )
    print(f"simulated a {frames.shape[0]}-frame video: {tif}")
    ingest(tif, store, overwrite=overwrite)
    print(f"ingested into {store}\n")
    info = describe(open_video(store))
    print("lptem info", store)
    print(format_info(info))
    return info
