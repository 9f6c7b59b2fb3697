"""Bad input: every case raises the project's error naming the file and the fix."""

from __future__ import annotations

import os
import pickle
import struct

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from test_io import write_mrc, write_video

from lptem_dask.errors import FormatError, InputError, LptemError, OutputExistsError
from lptem_dask.io import describe, from_array, ingest, open_video


def test_missing_path(tmp_path):
    p = tmp_path / "nope.tif"
    with pytest.raises(FormatError, match="does not exist") as err:
        open_video(p)
    assert str(p) in str(err.value)


@pytest.mark.parametrize("name", ["movie.xyz", "noext", "notes.txt"])
def test_unsupported_extension(tmp_path, name):
    p = tmp_path / name
    p.write_bytes(b"\x00" * 64)
    with pytest.raises(FormatError, match="unsupported file extension") as err:
        open_video(p)
    assert str(p) in str(err.value) and ".tif" in str(err.value)


def test_emi_points_to_ser(tmp_path):
    p = tmp_path / "a.emi"
    p.write_bytes(b"x" * 10)
    with pytest.raises(FormatError, match=r"a_1\.ser"):
        open_video(p)


@pytest.mark.parametrize("name", ["a.tif", "a.png", "a.mp4", "a.avi", "a.dm3", "a.emd", "a.mrc"])
def test_zero_byte_file(tmp_path, name):
    p = tmp_path / name
    p.touch()
    with pytest.raises(FormatError, match="zero-byte") as err:
        open_video(p)
    assert str(p) in str(err.value)


def test_zero_byte_frame_in_folder(tmp_path):
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "0.png")
    (tmp_path / "1.png").touch()
    with pytest.raises(FormatError, match="1.png"):
        open_video(tmp_path)


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_truncated_tiff(tmp_path, compression):
    p = tmp_path / "t.tif"
    tifffile.imwrite(
        p, np.ones((20, 32, 32), np.uint16), photometric="minisblack", compression=compression
    )
    data = p.read_bytes()
    p.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(FormatError, match="truncated") as err:
        open_video(p).values  # noqa: B018 - detected at open or at the latest when read
    assert str(p) in str(err.value)


def test_truncated_tiff_refused_at_open(tmp_path):
    p = tmp_path / "t.tif"
    tifffile.imwrite(p, np.ones((20, 32, 32), np.uint16), photometric="minisblack")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])  # pixel data cut: refused from the header alone
    with pytest.raises(FormatError, match="truncated"):
        open_video(p)


def test_corrupt_tiff(tmp_path):
    p = tmp_path / "c.tif"
    p.write_bytes(b"II*\x00" + os.urandom(500))
    with pytest.raises(FormatError, match="c.tif"):
        open_video(p)


def test_folder_mixing_frame_sizes(tmp_path):
    for i in range(3):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / f"f{i}.png")
    Image.fromarray(np.zeros((8, 9), np.uint8)).save(tmp_path / "f3.png")
    with pytest.raises(FormatError, match="f3.png") as err:
        open_video(tmp_path)
    assert "8 x 9" in str(err.value) and "8 x 8" in str(err.value)


def test_empty_folder(tmp_path):
    with pytest.raises(FormatError, match="no .png"):
        open_video(tmp_path)


def test_corrupt_frame_in_folder_fails_when_read(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (64, 64), np.uint8)).save(tmp_path / f"f{i}.png")
    data = (tmp_path / "f1.png").read_bytes()
    (tmp_path / "f1.png").write_bytes(data[: len(data) // 2])  # header intact, pixels cut
    v = open_video(tmp_path)  # headers are fine: opening is lazy
    with pytest.raises(FormatError, match="f1.png"):
        v.values  # noqa: B018


def test_two_d_tiff_is_one_frame(tmp_path):
    p = tmp_path / "img.tif"
    img = np.arange(12 * 10, dtype=np.float32).reshape(12, 10)
    tifffile.imwrite(p, img)
    v = open_video(p)
    assert v.shape == (1, 12, 10)
    np.testing.assert_array_equal(v.values[0], img)


def test_four_d_tiff_names_extra_axis(tmp_path):
    p = tmp_path / "tz.tif"
    tifffile.imwrite(p, np.zeros((3, 2, 8, 8), np.uint8), imagej=True, metadata={"axes": "TZYX"})
    with pytest.raises(FormatError, match="extra axis") as err:
        open_video(p)
    assert "Z (size 2)" in str(err.value)


def test_four_d_array_names_extra_axis():
    with pytest.raises(InputError, match="extra axis"):
        from_array(np.zeros((2, 3, 8, 8)))


def test_nan_inf_frames_accepted_and_reported():
    a = np.ones((5, 8, 8), np.float32)
    a[1, 0, 0] = np.nan
    a[3, 4, 4] = -np.inf
    a[4, 1, 1] = np.inf
    v = from_array(a)
    info = describe(v)
    assert info["nonfinite_frames"] == 3 and info["format"] == "array"
    np.testing.assert_array_equal(v.values, a)


def test_existing_output_refused_nothing_touched(tmp_path):
    src = from_array(np.ones((3, 8, 8), np.uint8))
    dst = tmp_path / "out.zarr"
    dst.mkdir()
    (dst / "keep.txt").write_text("precious")
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(OutputExistsError, match="overwrite"):
        ingest(src, dst)
    with pytest.raises(OutputExistsError):
        ingest(src, dst, compute=False)
    assert (dst / "keep.txt").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_absurd_mrc_header_refused_before_allocating(tmp_path):
    pytest.importorskip("rsciio")
    p = tmp_path / "huge.mrc"
    write_mrc(p, np.zeros((2, 4, 4), np.int16), pixel_A=1.0)
    raw = bytearray(p.read_bytes())
    raw[0:12] = np.array([2**20, 2**20, 10**6], "<i4").tobytes()
    p.write_bytes(bytes(raw))
    with pytest.raises(FormatError, match="header") as err:
        open_video(p)
    assert "huge.mrc" in str(err.value)


def test_absurd_tiff_dims_refused_before_allocating(tmp_path):
    p = tmp_path / "abs.tif"
    tifffile.imwrite(p, np.zeros((2, 4, 4), np.uint8), photometric="minisblack")
    raw = bytearray(p.read_bytes())
    with tifffile.TiffFile(p) as tif:
        tags = [tif.pages[0].tags[code] for code in (256, 257)]  # ImageWidth, ImageLength
        spots = [(t.valueoffset, t.dtype) for t in tags]
    for offset, dtype in spots:  # claim 100000 x 100000 pixels (or 60000 as SHORT)
        raw[offset : offset + 4] = (
            struct.pack("<HH", 60000, 0) if dtype == 3 else struct.pack("<I", 100000)
        )
    p.write_bytes(bytes(raw))
    with pytest.raises(FormatError, match="abs.tif"):
        open_video(p)


def test_sources_pickle_to_workers(tmp_path):
    """Lazy videos travel to distributed workers: the graph pickles and reads after."""
    from conftest import SHARED_DATA

    a = np.arange(3 * 5 * 6, dtype=np.uint16).reshape(3, 5, 6)
    tifffile.imwrite(tmp_path / "s.tif", a, photometric="minisblack")
    paths = [tmp_path / "s.tif"]
    emd = SHARED_DATA / "formats" / "fei_example_tem_stack.emd"
    if emd.exists():
        pytest.importorskip("rsciio")
        paths.append(emd)
    for path in paths:
        v = open_video(path, chunks=1)
        clone = pickle.loads(pickle.dumps(v.data))
        np.testing.assert_array_equal(clone.compute(scheduler="synchronous"), v.values)


def test_truncated_mrc(tmp_path):
    pytest.importorskip("rsciio")
    p = tmp_path / "t.mrc"
    write_mrc(p, np.zeros((4, 16, 16), np.int16), pixel_A=1.0)
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(FormatError, match="truncated"):
        open_video(p)


def test_truncated_video(tmp_path):
    p = tmp_path / "v.mp4"
    write_video(p, np.zeros((10, 16, 16), np.uint8), fps=10, codec="libx264")
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(FormatError, match="v.mp4"):
        open_video(p).values  # noqa: B018


def test_truncated_dm3(tmp_path):
    pytest.importorskip("rsciio")
    from conftest import shared_data

    src = shared_data("formats/test_stackbuilder_imagestack.dm3")
    p = tmp_path / "cut.dm3"
    p.write_bytes(src.read_bytes()[:300])
    with pytest.raises(FormatError, match="cut.dm3"):
        open_video(p)


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ext=st.sampled_from([".tif", ".png", ".jpg", ".mp4", ".avi", ".dm3", ".dm4", ".ser", ".mrc"]),
    payload=st.binary(min_size=1, max_size=300),
)
def test_garbage_raises_project_error(tmp_path, ext, payload):
    p = tmp_path / f"garbage{ext}"
    p.write_bytes(payload)
    try:
        open_video(p).values  # noqa: B018
    except LptemError as exc:
        assert "garbage" in str(exc)
