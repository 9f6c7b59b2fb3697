import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from lptem_dask import __version__
from lptem_dask.cli import main


def _run(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def _tif(path: Path, frames: int = 3) -> Path:
    data = np.arange(frames * 16 * 16, dtype=np.uint16).reshape(frames, 16, 16)
    tifffile.imwrite(
        path,
        data,
        imagej=True,
        resolution=(1 / 0.5, 1 / 0.5),
        metadata={"unit": "nm", "finterval": 0.2, "axes": "TYX"},
    )
    return path


def test_version_and_help(capsys):
    code, out, _ = _run(["--version"], capsys)
    assert code == 0 and __version__ in out
    code, out, _ = _run(["--help"], capsys)
    assert code == 0
    for cmd in ("info", "ingest", "demo", "run", "report"):
        assert cmd in out


def test_info_prints_metadata(tmp_path, capsys):
    tif = _tif(tmp_path / "v.tif")
    code, out, _ = _run(["info", str(tif)], capsys)
    assert code == 0
    assert "frames: 3" in out and "(3, 16, 16)" in out and "uint16" in out
    assert "pixel_size_nm: 0.5" in out and "frame_interval_s: 0.2" in out


@pytest.mark.parametrize("argv_tail", [["info", "{missing}"], ["ingest", "{missing}", "{out}"]])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, argv_tail):
    argv = [a.format(missing=tmp_path / "nope.tif", out=tmp_path / "o.zarr") for a in argv_tail]
    code, out, err = _run(argv, capsys)
    assert code == 2
    assert err.count("\n") == 1 and "nope.tif" in err and "Traceback" not in err


def test_existing_output_refused_and_untouched(tmp_path, capsys):
    tif = _tif(tmp_path / "v.tif")
    dst = tmp_path / "v.zarr"
    dst.mkdir()
    (dst / "keep.txt").write_text("precious")
    code, _, err = _run(["ingest", str(tif), str(dst)], capsys)
    assert code == 2 and "--overwrite" in err
    assert (dst / "keep.txt").read_text() == "precious"
    code, _, _ = _run(["ingest", str(tif), str(dst), "--overwrite"], capsys)
    assert code == 0 and not (dst / "keep.txt").exists()


def test_console_script_exit_status(tmp_path):
    exe = Path(sys.executable).with_name("lptem")
    if not exe.exists():  # pragma: no cover
        pytest.skip("console script not installed")
    res = subprocess.run(
        [str(exe), "info", str(tmp_path / "missing.tif")], capture_output=True, text=True
    )
    assert res.returncode == 2
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_segment_rejects_a_bad_filter_setting_with_exit_2(tmp_path, capsys):
    tif = _tif(tmp_path / "v.tif")
    code, _, err = _run(["segment", str(tif), "--min-confidence", "1.5"], capsys)
    assert code == 2
    assert "min_confidence" in err and "Traceback" not in err
    assert not (tmp_path / "v.zarr").exists()  # nothing written


def test_segment_rejects_a_non_positive_particle_area_with_exit_2(tmp_path, capsys):
    tif = _tif(tmp_path / "v.tif")
    code, _, err = _run(["segment", str(tif), "--particle-area-px", "0"], capsys)
    assert code == 2
    assert "particle_area_px" in err and "Traceback" not in err
    assert not (tmp_path / "v.zarr").exists()
