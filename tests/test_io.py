"""Readers of lptem_dask.io: every format written small, read back lazily and exactly."""

from __future__ import annotations

import contextlib
from pathlib import Path

import dask
import dask.array as da
import imageio_ffmpeg
import numpy as np
import pytest
import tifffile
import xarray as xr
import zarr
from conftest import shared_data
from PIL import Image

from lptem_dask import _readers
from lptem_dask.errors import FormatError, InputError
from lptem_dask.io import describe, from_array, ingest, open_video


@contextlib.contextmanager
def raise_if_dask_computes():
    """Fail if anything inside the block asks Dask to compute."""

    def _refuse(*args, **kwargs):
        raise AssertionError("dask computed something while building a lazy object")

    with dask.config.set(scheduler=_refuse):
        yield


def check_video(v: xr.DataArray, shape, dtype, *, pixel_nm=None, interval_s=None):
    """Assert the DESIGN.md structure of a video and its calibration."""
    assert isinstance(v, xr.DataArray) and v.name == "image"
    assert v.dims == ("frame", "y", "x")
    assert isinstance(v.data, da.Array)
    assert v.shape == shape and v.dtype == np.dtype(dtype)
    assert all(len(c) == 1 for c in v.chunks[1:]), "chunks must span whole frames"
    for c in ("frame", "time", "y", "x"):
        assert "units" in v[c].attrs
    assert v["time"].dims == ("frame",) and v["time"].attrs["units"] == "s"
    assert v["frame"].dtype == np.int64
    px = v.attrs["pixel_size_nm"]
    np.testing.assert_allclose(v["x"].values, (np.arange(shape[2]) + 0.5) * px)
    np.testing.assert_allclose(v["y"].values, (np.arange(shape[1]) + 0.5) * px)
    if pixel_nm is None:
        assert v.attrs["pixel_size_known"] is False and px == 1.0
    else:
        assert v.attrs["pixel_size_known"] is True
        np.testing.assert_allclose(px, pixel_nm, rtol=1e-6)
    if interval_s is None:
        assert v.attrs["frame_interval_known"] is False
    else:
        assert v.attrs["frame_interval_known"] is True
        np.testing.assert_allclose(v.attrs["frame_interval_s"], interval_s, rtol=1e-6)


def frames(n=5, ny=12, nx=16, dtype=np.uint16, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.floating):
        return rng.normal(100, 10, (n, ny, nx)).astype(dtype)
    hi = min(np.iinfo(dtype).max, 60000)
    return rng.integers(0, hi, (n, ny, nx)).astype(dtype)


# ------------------------------------------------------------------ from_array


def test_from_array_structure_and_values():
    a = frames(6, dtype=np.float32)
    v = from_array(a, pixel_size_nm=0.5, frame_interval_s=0.2, dose_rate_e_per_A2_s=3.0)
    check_video(v, (6, 12, 16), np.float32, pixel_nm=0.5, interval_s=0.2)
    np.testing.assert_allclose(v["time"].values, np.arange(6) * 0.2)
    assert v.attrs["dose_rate_e_per_A2_s"] == 3.0 and v.attrs["history"] == []
    np.testing.assert_array_equal(v.values, a)


def test_from_array_unknown_calibration_is_flagged():
    v = from_array(frames(3))
    check_video(v, (3, 12, 16), np.uint16)
    assert v.attrs["frame_interval_s"] == 1.0
    np.testing.assert_array_equal(v["time"].values, [0.0, 1.0, 2.0])


def test_from_array_2d_becomes_one_frame():
    img = frames(1)[0]
    v = from_array(img, pixel_size_nm=2.0)
    check_video(v, (1, 12, 16), np.uint16, pixel_nm=2.0)
    np.testing.assert_array_equal(v.values[0], img)


@pytest.mark.parametrize(
    ("shape", "needle"),
    [((2, 3, 12, 16), r"axis 0 \(size 2\)"), ((4, 12, 16, 3), "colour channels")],
)
def test_from_array_4d_names_the_extra_axis(shape, needle):
    with pytest.raises(InputError, match=needle):
        from_array(np.zeros(shape, np.uint8))


def test_from_array_rejects_bad_arguments():
    with pytest.raises(InputError, match="1-D"):
        from_array(np.zeros(5))
    with pytest.raises(InputError, match="`pixel_size_nm`"):
        from_array(np.zeros((2, 4, 4)), pixel_size_nm=-1)
    with pytest.raises(InputError, match="`time_s`"):
        from_array(np.zeros((3, 4, 4)), time_s=[0.0, 2.0, 1.0])
    with pytest.raises(InputError, match="numeric"):
        from_array(np.zeros((2, 4, 4), complex))


def test_from_array_dask_input_rechunked_to_whole_frames():
    a = frames(7)
    v = from_array(da.from_array(a, chunks=(3, 5, 5)))
    assert v.chunks[0] == (3, 3, 1) and v.chunks[1:] == ((12,), (16,))
    v2 = from_array(da.from_array(a, chunks=(3, 5, 5)), chunks=2)
    assert v2.chunks[0] == (2, 2, 2, 1)
    np.testing.assert_array_equal(v2.values, a)


def test_from_array_default_chunks_about_32_mb():
    a = da.zeros((100, 1024, 1024), dtype=np.uint16, chunks=(100, 1024, 1024))  # 2 MB frames
    v = from_array(a, chunks="auto")
    assert v.chunks[0][0] == 15  # 15 x 2.097 MB = 31.5 MB


def test_from_array_builds_nothing():
    a = da.from_array(frames(4), chunks=(1, 12, 16))
    with raise_if_dask_computes():
        from_array(a, pixel_size_nm=1.0, chunks=2)


def test_from_array_non_uniform_time():
    t = [0.0, 0.1, 0.2, 0.5, 0.6]  # two frames dropped after 0.2 s
    v = from_array(frames(5), time_s=t)
    np.testing.assert_allclose(v["time"].values, t)
    np.testing.assert_allclose(v.attrs["frame_interval_s"], 0.1)
    assert v.attrs["frame_interval_known"] is True


# ------------------------------------------------------------------------ TIFF


def test_tiff_imagej_calibration(tmp_path):
    a = frames(6)
    p = tmp_path / "stack.tif"
    tifffile.imwrite(
        p,
        a,
        imagej=True,
        resolution=(1 / 0.25, 1 / 0.25),
        metadata={"unit": "nm", "finterval": 0.05, "axes": "TYX"},
    )
    _readers.reset_decoded_frames()
    v = open_video(p, chunks=4)
    assert _readers.decoded_frames() == 0
    check_video(v, (6, 12, 16), np.uint16, pixel_nm=0.25, interval_s=0.05)
    assert v.chunks[0] == (4, 2)
    assert v.attrs["source"] == str(p)
    np.testing.assert_array_equal(v.values, a)
    assert _readers.decoded_frames() == 6


def test_tiff_imagej_micron_units(tmp_path):
    p = tmp_path / "um.tif"
    tifffile.imwrite(
        p,
        frames(2),
        imagej=True,
        resolution=(1 / 0.002, 1 / 0.002),
        metadata={"unit": "micron", "axes": "TYX"},
    )
    check_video(open_video(p), (2, 12, 16), np.uint16, pixel_nm=2.0)


def test_tiff_ome_non_uniform_time_and_units(tmp_path):
    a = frames(4, dtype=np.float32)
    p = tmp_path / "ome.ome.tif"
    delta_t = [0.0, 0.1, 0.2, 0.5]  # dropped frames between 0.2 and 0.5 s
    tifffile.imwrite(
        p,
        a,
        ome=True,
        metadata={
            "axes": "TYX",
            "PhysicalSizeX": 0.0031,
            "PhysicalSizeXUnit": "µm",
            "TimeIncrement": 0.1,
            "TimeIncrementUnit": "s",
            "Plane": {"DeltaT": delta_t, "DeltaTUnit": ["s"] * 4},
        },
    )
    v = open_video(p)
    check_video(v, (4, 12, 16), np.float32, pixel_nm=3.1, interval_s=0.1)
    np.testing.assert_allclose(v["time"].values, delta_t)
    np.testing.assert_array_equal(v.values, a)


def test_tiff_user_arguments_override_file(tmp_path):
    p = tmp_path / "stack.tif"
    tifffile.imwrite(
        p,
        frames(3),
        imagej=True,
        resolution=(4.0, 4.0),
        metadata={"unit": "nm", "finterval": 0.5, "axes": "TYX"},
    )
    v = open_video(p, pixel_size_nm=7.0, frame_interval_s=2.0)
    check_video(v, (3, 12, 16), np.uint16, pixel_nm=7.0, interval_s=2.0)
    np.testing.assert_allclose(v["time"].values, [0.0, 2.0, 4.0])


def test_tiff_compressed_pages_and_metric_resolution(tmp_path):
    a = frames(5, dtype=np.uint8)
    p = tmp_path / "zlib.tiff"
    # 1e6 px per cm -> 10 nm pixels
    tifffile.imwrite(
        p, a, photometric="minisblack", compression="zlib", resolution=(1e6, 1e6), resolutionunit=3
    )
    v = open_video(p, chunks=2)
    check_video(v, (5, 12, 16), np.uint8, pixel_nm=10.0)
    assert v.attrs["frame_interval_known"] is False
    np.testing.assert_array_equal(v.values, a)


def test_tiff_big_endian_float_with_nan(tmp_path):
    a = frames(3, dtype=np.float32)
    a[1, 2, 3] = np.nan
    a[2, 0, 0] = np.inf
    p = tmp_path / "be.tif"
    tifffile.imwrite(p, a.astype(">f4"), byteorder=">", photometric="minisblack")
    v = open_video(p)
    assert v.dtype == np.float32  # native byte order
    np.testing.assert_array_equal(v.values, a)
    info = describe(p)
    assert info["nonfinite_frames"] == 2 and info["format"] == "tiff"


def test_tiff_rgb_frames_become_grey(tmp_path):
    rgb = np.zeros((2, 8, 10, 3), np.uint8)
    rgb[..., 0] = 200  # red
    rgb[1, ..., 1] = 100
    p = tmp_path / "rgb.tif"
    tifffile.imwrite(p, rgb, photometric="rgb")
    v = open_video(p)
    assert v.shape == (2, 8, 10) and v.dtype == np.uint8
    expect = np.rint(0.299 * 200 + 0.587 * np.array([0, 100]))
    np.testing.assert_array_equal(v.values[:, 0, 0], expect)


# -------------------------------------------------------------- image folders


def test_folder_png_natural_order_uint16(tmp_path):
    a = frames(12, dtype=np.uint16)
    for i, f in enumerate(a):
        Image.fromarray(f).save(tmp_path / f"frame_{i}.png")  # frame_10 after frame_9
    (tmp_path / "notes.txt").write_text("ignored")
    _readers.reset_decoded_frames()
    v = open_video(tmp_path, chunks=5)
    assert _readers.decoded_frames() == 0
    check_video(v, (12, 12, 16), np.uint16)
    np.testing.assert_array_equal(v.values, a)


def test_natural_key_fallback_matches_natsort():
    import natsort

    from lptem_dask._io_formats import _natural_key

    names = ["f10.png", "f2.png", "f1.png", "f1b.png", "g.png", "f100.png", "a3.png", "f9.png"]
    expect = ["a3.png", "f1.png", "f1b.png", "f2.png", "f9.png", "f10.png", "f100.png", "g.png"]
    assert natsort.natsorted(names, alg=natsort.ns.PATH) == expect
    assert sorted(names, key=_natural_key) == expect


def test_folder_jpeg_lossy_within_tolerance(tmp_path):
    a = np.stack([np.full((16, 16), 20 * i + 10, np.uint8) for i in range(4)])
    a[:, 4:8, 4:8] += 30
    for i, f in enumerate(a):
        Image.fromarray(f).save(tmp_path / f"{i:03d}.jpg", quality=95)
    v = open_video(tmp_path)
    check_video(v, (4, 16, 16), np.uint8)
    assert np.abs(v.values.astype(int) - a).max() <= 4


def test_folder_tiff_and_rgb_png(tmp_path):
    a = frames(3, dtype=np.float32)
    for i, f in enumerate(a):
        tifffile.imwrite(tmp_path / f"t{i}.tif", f)
    np.testing.assert_array_equal(open_video(tmp_path).values, a)
    d = tmp_path / "rgb"
    d.mkdir()
    for i in range(2):
        Image.fromarray(np.full((6, 7, 3), (10 * i, 100, 200), np.uint8)).save(d / f"{i}.png")
    v = open_video(d)
    assert v.dtype == np.uint8
    np.testing.assert_array_equal(
        v.values[:, 0, 0], np.rint(0.587 * 100 + 0.114 * 200 + 0.299 * np.array([0, 10]))
    )


def test_single_png_file_is_one_frame(tmp_path):
    img = frames(1, dtype=np.uint8)[0]
    Image.fromarray(img).save(tmp_path / "one.png")
    v = open_video(tmp_path / "one.png", pixel_size_nm=0.1)
    check_video(v, (1, 12, 16), np.uint8, pixel_nm=0.1)
    np.testing.assert_array_equal(v.values[0], img)


# ------------------------------------------------------------------------ zarr


def test_any_zarr_3d_array_and_group(tmp_path):
    a = frames(5)
    zarr.create_array(tmp_path / "arr.zarr", data=a, chunks=(2, 12, 16))
    v = open_video(tmp_path / "arr.zarr", chunks=3, pixel_size_nm=0.3)
    check_video(v, (5, 12, 16), np.uint16, pixel_nm=0.3)
    assert v.chunks[0] == (3, 2)
    np.testing.assert_array_equal(v.values, a)
    g = zarr.open_group(tmp_path / "g.zarr", mode="w")
    g.create_array("movie", data=a)
    g.create_array("meta", data=np.arange(3))
    np.testing.assert_array_equal(open_video(tmp_path / "g.zarr").values, a)
    g.create_array("other", data=a)
    with pytest.raises(FormatError, match="exactly one 3-D array"):
        open_video(tmp_path / "g.zarr")


def test_ingested_store_calibration_override(tmp_path):
    v = from_array(frames(3), time_s=[0.0, 0.5, 2.0], pixel_size_nm=0.7)
    store = ingest(v, tmp_path / "v.zarr")
    w = open_video(store, pixel_size_nm=2.0)  # keeps the stored non-uniform time
    check_video(w, (3, 12, 16), np.uint16, pixel_nm=2.0, interval_s=v.attrs["frame_interval_s"])
    np.testing.assert_allclose(w["time"].values, [0.0, 0.5, 2.0])
    assert [h["step"] for h in w.attrs["history"]] == ["ingest"]
    u = open_video(ingest(from_array(frames(3)), tmp_path / "u.zarr"), pixel_size_nm=2.0)
    assert u.attrs["frame_interval_known"] is False  # unknown stays unknown
    w2 = open_video(store, frame_interval_s=0.25)
    np.testing.assert_allclose(w2["time"].values, [0.0, 0.25, 0.5])


def test_ingested_store_reopens_exactly(tmp_path):
    a = frames(6, dtype=np.float32)
    a[2, 1, 1] = np.nan
    v = from_array(a, time_s=[0, 1, 2, 5, 6, 7.5], pixel_size_nm=0.7, dose_rate_e_per_A2_s=2.5)
    store = ingest(v, tmp_path / "v.zarr")
    w = open_video(store)
    np.testing.assert_array_equal(w.values, a)
    for c in ("frame", "time", "y", "x"):
        np.testing.assert_array_equal(w[c].values, v[c].values)
        assert w[c].attrs == v[c].attrs
        assert w[c].dtype == v[c].dtype
    original = {k: val for k, val in v.attrs.items() if k != "history"}
    assert {k: val for k, val in w.attrs.items() if k != "history"} == original
    assert [h["step"] for h in w.attrs["history"]] == ["ingest"]


# ----------------------------------------------------------------- mp4 / avi


def write_video(path: Path, a: np.ndarray, *, fps: float, codec: str, rgb=False):
    n, ny, nx = a.shape[:3]
    params = ["-qscale:v", "1"] if codec == "mjpeg" else ["-crf", "0"]
    w = imageio_ffmpeg.write_frames(
        str(path),
        (nx, ny),
        pix_fmt_in="rgb24" if rgb else "gray",
        fps=fps,
        codec=codec,
        macro_block_size=8,
        output_params=params,
    )
    w.send(None)
    for f in a:
        w.send(np.ascontiguousarray(f))
    w.close()


@pytest.mark.parametrize(("ext", "codec"), [("mp4", "libx264"), ("avi", "mjpeg")])
def test_video_files_seek_per_chunk(tmp_path, ext, codec):
    levels = np.arange(25) * 9 + 10
    a = np.repeat(levels[:, None, None], 16 * 24, axis=1).reshape(25, 16, 24).astype(np.uint8)
    p = tmp_path / f"v.{ext}"
    write_video(p, a, fps=20.0, codec=codec)
    _readers.reset_decoded_frames()
    v = open_video(p, chunks=4)
    assert _readers.decoded_frames() == 0
    check_video(v, (25, 16, 24), np.uint8, interval_s=0.05)
    got = v.values
    # lossy codecs: each frame within a few grey levels of its own level, so a
    # chunk starting at the wrong frame (9 levels off) would fail
    assert np.abs(got.astype(int) - a).max() <= 3
    np.testing.assert_array_equal(v[9:14].values, got[9:14])


def test_video_dropped_frames_show_as_time_gaps(tmp_path):
    import subprocess

    levels = np.arange(12) * 20 + 10
    a = np.repeat(levels[:, None, None], 16 * 16, axis=1).reshape(12, 16, 16).astype(np.uint8)
    cfr = tmp_path / "cfr.mp4"
    write_video(cfr, a, fps=10.0, codec="libx264")
    vfr = tmp_path / "vfr.mp4"
    # frames 5.. are shifted 3 frame periods later: 3 frames dropped after frame 4
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(cfr), "-vf",
         "setpts='if(gte(N,5),(N+3)/(10*TB),N/(10*TB))'", "-fps_mode", "passthrough",
         "-c:v", "libx264", "-crf", "0", str(vfr)],
        check=True,
    )  # fmt: skip
    v = open_video(vfr, chunks=3)
    check_video(v, (12, 16, 16), np.uint8, interval_s=0.1)
    expect_t = np.r_[np.arange(5), np.arange(5, 12) + 3] * 0.1
    np.testing.assert_allclose(v["time"].values, expect_t, atol=1e-3)
    # chunks start at frames 3, 6, 9: seeking lands on the right frame across the gap
    assert np.abs(v.values.astype(int) - a).max() <= 3


def test_video_rgb_converted_to_grey(tmp_path):
    a = np.zeros((4, 16, 16, 3), np.uint8)
    a[..., 0] = 200
    a[..., 2] = 100
    p = tmp_path / "rgb.mp4"
    write_video(p, a, fps=10.0, codec="libx264", rgb=True)
    v = open_video(p)
    assert v.shape == (4, 16, 16)
    expect = 0.299 * 200 + 0.114 * 100
    assert abs(float(v.mean()) - expect) < 4


# -------------------------------------------------------------------- MRC


def write_mrc(path: Path, data: np.ndarray, pixel_A: float) -> None:
    """Minimal MRC2014 file: 1024-byte header, then the data (little endian)."""
    nz, ny, nx = data.shape
    h = np.zeros(256, "<i4")
    f = h.view("<f4")
    h[0:3] = [nx, ny, nz]
    h[3] = {
        np.dtype("int8"): 0,
        np.dtype("int16"): 1,
        np.dtype("float32"): 2,
        np.dtype("uint16"): 6,
    }[data.dtype]
    h[7:10] = [nx, ny, nz]
    f[10:13] = [nx * pixel_A, ny * pixel_A, nz * pixel_A]
    f[13:16] = 90.0
    h[16:19] = [1, 2, 3]
    h[52] = np.frombuffer(b"MAP ", "<i4")[0]
    h[53] = np.frombuffer(bytes([0x44, 0x44, 0, 0]), "<i4")[0]
    with open(path, "wb") as fh:
        fh.write(h.tobytes())
        fh.write(data.astype(data.dtype.newbyteorder("<")).tobytes())


def test_mrc_stack(tmp_path):
    pytest.importorskip("rsciio")
    a = frames(5, dtype=np.int16)
    write_mrc(tmp_path / "s.mrc", a, pixel_A=2.5)
    _readers.reset_decoded_frames()
    v = open_video(tmp_path / "s.mrc", frame_interval_s=0.04, chunks=2)
    assert _readers.decoded_frames() == 0
    check_video(v, (5, 12, 16), np.int16, pixel_nm=0.25, interval_s=0.04)
    np.testing.assert_array_equal(v.values, a)
    assert _readers.decoded_frames() == 5


# ------------------------------------------------- real instrument files

REAL = [
    # file, shape, dtype, pixel size nm (None: unknown), frame interval s (None: unknown)
    ("test_stackbuilder_imagestack.dm3", (3, 2, 16), "uint32", 59.9829, None),
    ("test-1.dm3", (2, 2, 2), "int16", None, None),
    ("test-1.dm4", (2, 2, 2), "int16", None, None),
    ("test_STEM_image.dm3", (1, 68, 68), "uint32", 0.248538, None),
    ("fei_example_tem_stack.emd", (2, 3, 3), "int16", 0.00817288, 0.8),
    ("128x128-TEM_search_1.ser", (1, 128, 128), "int32", 5.26121, None),
    ("128x128x5-diffraction_preview_1.ser", (5, 128, 128), "int32", None, None),
]


@pytest.mark.parametrize(("name", "shape", "dtype", "pixel_nm", "interval_s"), REAL)
def test_real_instrument_files(name, shape, dtype, pixel_nm, interval_s):
    pytest.importorskip("rsciio")
    path = shared_data(f"formats/{name}")
    _readers.reset_decoded_frames()
    v = open_video(path)
    assert _readers.decoded_frames() == 0
    check_video(v, shape, dtype, pixel_nm=pixel_nm, interval_s=interval_s)
    values = v.values
    assert values.shape == shape and np.isfinite(values).all()
    assert _readers.decoded_frames() == shape[0]
    if name == "test-1.dm3":  # DM3 and DM4 of the same acquisition hold the same values
        np.testing.assert_array_equal(values, open_video(shared_data("formats/test-1.dm4")).values)


def test_ser_per_frame_times_give_non_uniform_time(tmp_path):
    """TIA time tags (1-s resolution) become `time` when they increase; else ignored."""
    pytest.importorskip("rsciio")
    src = shared_data("formats/128x128x5-diffraction_preview_1.ser")
    raw = bytearray(src.read_bytes())
    # this series' 5 time tags all hold the same second: no per-frame times
    assert open_video(src).attrs["frame_interval_known"] is False
    # tag offsets follow the 5 data offsets at OffsetArrayOffset (72; 8-byte offsets)
    tag_offsets = np.frombuffer(bytes(raw[72 + 40 : 72 + 80]), "<u8")
    stamp0 = int(np.frombuffer(bytes(raw[tag_offsets[0] + 4 : tag_offsets[0] + 8]), "<u4")[0])
    for off, dt in zip(tag_offsets, [0, 2, 4, 10, 12], strict=True):  # frames dropped at 6-8 s
        raw[off + 4 : off + 8] = np.array([stamp0 + dt], "<u4").tobytes()
    p = tmp_path / "timed_1.ser"
    p.write_bytes(bytes(raw))
    v = open_video(p)
    np.testing.assert_array_equal(v["time"].values, [0.0, 2.0, 4.0, 10.0, 12.0])
    assert v.attrs["frame_interval_s"] == 2.0 and v.attrs["frame_interval_known"] is True
    np.testing.assert_array_equal(v.values, open_video(src).values)
