import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from lptem_dask.errors import OutputExistsError
from lptem_dask.report import write_report
from lptem_dask.store import create_labels_array, table_path, write_ngff_metadata


def _make_store(path: Path) -> Path:
    rng = np.random.default_rng(0)
    nf, n = 6, 64
    yy, xx = np.mgrid[:n, :n]
    image = rng.normal(1000, 20, size=(nf, n, n)).astype(np.float32)
    labels = np.zeros((nf, n, n), np.int32)
    rows = []
    for f in range(nf):
        for k, (cy, cx) in enumerate([(20 + f, 20), (44, 40 - f)], start=1):
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 < 36
            image[f][disc] -= 200
            labels[f][disc] = k
            rows.append({"frame": f, "label": k, "y": cy, "x": cx, "particle": k - 1})
    coords = {"frame": np.arange(nf), "time": ("frame", np.arange(nf) * 0.1)}
    ds = xr.Dataset(
        {"image": (("frame", "y", "x"), image, {"pixel_size_nm": 2.0, "frame_interval_s": 0.1})},
        coords=coords,
    )
    ds.to_zarr(path, consolidated=False, zarr_format=3)
    create_labels_array(path, labels.shape, labels.shape)[:] = labels
    write_ngff_metadata(path, pixel_size_nm=2.0, frame_interval_s=0.1)
    tp = table_path(path, "tracks")
    tp.mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(tp / "part-000000.parquet")
    return path


def test_report_is_self_contained(tmp_path: Path):
    store = _make_store(tmp_path / "v.zarr")
    from lptem_dask.store import aux_dir

    aux_dir(store, "results/diffusion")
    (store / "results" / "diffusion" / "summary.json").write_text('{"D_nm2_per_s": 12.5}')
    page = write_report(store)
    text = page.read_text()
    assert text.count("data:image/png;base64,") >= 1
    assert "data:image/gif;base64," in text
    assert "D_nm2_per_s" in text and "12.5" in text
    assert 'src="http' not in text  # nothing fetched from elsewhere
    assert (page.parent / "frames.svg").exists()
    with pytest.raises(OutputExistsError, match="already exists"):
        write_report(store)
    write_report(store, overwrite=True)


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        exe = shutil.which(name)
        if exe:
            return exe
    return None


def test_report_renders_in_headless_chromium(tmp_path: Path):
    exe = _chromium()
    if exe is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed; .ci/run installs Debian's chromium package")
        pytest.skip("chromium not installed (apt-get install chromium)")
    store = _make_store(tmp_path / "v.zarr")
    page = write_report(store)
    shot = tmp_path / "report.png"
    dom = subprocess.run(
        [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=3000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert "Frames with outlines" in dom
    subprocess.run(
        [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile2'}",
            f"--screenshot={shot}",
            "--window-size=1200,1600",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
    )
    assert shot.exists() and shot.stat().st_size > 10_000
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert img.std() > 10  # the images rendered, not a blank page
    out = Path(os.environ.get("LPTEM_ARTIFACTS", tmp_path))
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, out / "report_screenshot.png")


def test_store_opens_in_ome_zarr(tmp_path: Path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    from lptem_dask.store import open_store_dataset

    store = _make_store(tmp_path / "v.zarr")
    ds = open_store_dataset(store)
    assert set(ds.data_vars) >= {"image", "labels"}
    assert ds["labels"].dims == ("frame", "y", "x") and ds["labels"].dtype == np.int32
    nodes = list(Reader(parse_url(str(store)))())
    image_node = nodes[0]
    assert image_node.data[0].shape == (6, 64, 64)
    axes = image_node.metadata["axes"]
    assert [a["type"] for a in axes] == ["time", "space", "space"]
    label_nodes = [n for n in nodes if any(type(s).__name__ == "Label" for s in n.specs)]
    assert label_nodes, "ome-zarr found no label image"
    assert any(n.data[0].shape == (6, 64, 64) and n.data[0].dtype == np.int32 for n in label_nodes)
