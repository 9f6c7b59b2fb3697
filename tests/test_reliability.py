"""Faults survived, bad input refused, nothing lost, nothing executed.

Complements ``test_pipeline.py`` (resume after ``lptem run`` is SIGKILLed
mid-write, a deleted chunk recomputed, one failing video), ``test_io_bad_input.py``
(truncated TIFF/MRC/MP4/DM3, zero-byte files, absurd TIFF/MRC headers, mixed
frame sizes), ``test_config.py`` (unknown keys, wrong types), ``test_infer.py``
(malicious pickle checkpoint) and ``test_cluster.py`` (listeners on 127.0.0.1),
and ``test_fuzz.py`` (property tests of every reader and the config loader).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml
from PIL import Image
from test_io import write_mrc, write_video
from test_pipeline import _assert_same, _config, _snapshot, inputs  # noqa: F401 - fixture

from lptem_dask.cli import main
from lptem_dask.config import ClusterConfig, PipelineConfig, config_from_mapping
from lptem_dask.errors import LockedError, LptemError, StoreError
from lptem_dask.io import describe, from_array, ingest, open_video
from lptem_dask.pipeline import (
    CHUNK_STAGES,
    FAULT_PAUSE_ENV,
    STATE_DIR,
    read_compute_log,
    run_pipeline,
)
from lptem_dask.store import store_lock

LPTEM = str(Path(sys.executable).with_name("lptem"))
PACKAGE = Path(__file__).resolve().parents[1] / "lptem_dask"
SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "formats"


def _run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out, out.err


def _tree(path: Path) -> dict[str, str]:
    """Every file under ``path`` with the sha256 of its bytes."""
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def _noise_tif(path: Path, n: int = 20, size: int = 64) -> Path:
    rng = np.random.default_rng(1)  # noise: compresses poorly, so the store is large
    tifffile.imwrite(path, rng.integers(0, 60000, (n, size, size), np.uint16))
    return path


# =========================================================================== faults


def test_worker_killed_mid_task_run_completes_identical(inputs: Path, tmp_path: Path):  # noqa: F811
    """SIGKILL a Dask worker process while it executes a chunk task: same results."""
    from lptem_dask.cluster import make_client

    videos = [str(inputs / "movie0.tif")]
    ref_cfg = config_from_mapping(PipelineConfig, _config(inputs, tmp_path / "ref", videos=videos))
    cfg = config_from_mapping(PipelineConfig, _config(inputs, tmp_path / "out", videos=videos))
    out_store = tmp_path / "out" / "movie0.zarr"
    with make_client(ClusterConfig(n_workers=2, threads_per_worker=1, dashboard_port=0)) as client:
        run_pipeline(ref_cfg, client=client, progress=False)
        ref = _snapshot(tmp_path / "ref" / "movie0.zarr")

        pids = client.run(os.getpid)
        # writes pause half-way (a lambda: cloudpickle sends it by value, os by reference)
        client.run(lambda: os.environ.__setitem__(FAULT_PAUSE_ENV, "1.5"))
        result: dict = {}

        def target() -> None:
            try:
                result["status"] = run_pipeline(cfg, client=client, progress=False)
            except BaseException as exc:  # pragma: no cover - shown by the assertion below
                result["error"] = exc

        runner = threading.Thread(target=target)
        runner.start()
        deadline = time.time() + 120
        victim = None
        while victim is None:
            assert time.time() < deadline and runner.is_alive(), f"no write was caught: {result}"
            if list(out_store.glob(f"{STATE_DIR}/writing-*")):
                executing = client.run(
                    lambda dask_worker: [str(ts.key) for ts in dask_worker.state.executing]
                )
                busy = [
                    addr
                    for addr, keys in executing.items()
                    if any(k.split("-")[0] in (*CHUNK_STAGES, "chunk") for k in keys)
                ]
                if busy:
                    victim = busy[0]
                    killed_keys = executing[victim]
            time.sleep(0.05)
        os.kill(pids[victim], signal.SIGKILL)  # the worker process, mid task
        survivors = [a for a in pids if a != victim]
        client.run(lambda: os.environ.pop(FAULT_PAUSE_ENV, None), workers=survivors)
        runner.join(timeout=300)
        assert not runner.is_alive(), "the run did not finish after the worker was killed"
        assert pids[victim] not in client.run(os.getpid).values()  # it really died

    assert any(k.split("-")[0] in (*CHUNK_STAGES, "chunk") for k in killed_keys)
    assert list(result["status"]["status"]) == ["done"]
    _assert_same(ref, _snapshot(out_store))


def _limit_fsize(nbytes: int) -> Callable[[], None]:
    def apply() -> None:  # runs in the child before exec: a real kernel limit
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))

    return apply


def _lptem_limited(args: list[str], limit: int | None, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [LPTEM, *args],
        preexec_fn=_limit_fsize(limit) if limit else None,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def test_ingest_out_of_space_clear_error_nothing_half_written(tmp_path: Path):
    """A write fails (RLIMIT_FSIZE: EFBIG, like a full disk): one line, exit 2, nothing lost."""
    src = _noise_tif(tmp_path / "v.tif")
    earlier = ingest(open_video(_noise_tif(tmp_path / "e.tif", n=3)), tmp_path / "earlier.zarr")
    before = _tree(earlier)

    for args in (
        ["ingest", "v.tif", "new.zarr"],
        ["ingest", "v.tif", "earlier.zarr", "--overwrite"],
    ):
        proc = _lptem_limited(args, 20_000, tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert args[2] in proc.stderr and "free disk space" in proc.stderr
        assert not (tmp_path / "new.zarr").exists()
        assert not [p.name for p in tmp_path.iterdir() if p.name.startswith((".tmp-", ".old-"))]
        assert _tree(earlier) == before  # the earlier output, even when --overwrite was asked
    # control: without the limit the same command works, so the limit caused the failure
    assert _lptem_limited(["ingest", "v.tif", "new.zarr"], None, tmp_path).returncode == 0
    np.testing.assert_array_equal(open_video(tmp_path / "new.zarr").values, open_video(src).values)


def test_ingest_out_of_space_in_process_is_store_error(tmp_path: Path):
    src = _noise_tif(tmp_path / "v.tif")
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, old[1]))
    try:
        with pytest.raises(StoreError, match="free disk space") as err:
            ingest(src, tmp_path / "o.zarr")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
        signal.signal(signal.SIGXFSZ, handler)
    assert "o.zarr" in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.tif"]


@pytest.mark.slow
def test_run_out_of_space_then_rerun_identical(inputs: Path, tmp_path: Path):  # noqa: F811
    """`lptem run` under a file-size limit fails; the rerun completes bit-identical."""
    videos = [str(inputs / "movie0.tif")]
    for name in ("ref", "out"):
        (tmp_path / f"{name}.yaml").write_text(
            yaml.safe_dump(_config(inputs, tmp_path / name, videos=videos))
        )
    assert _lptem_limited(["run", "ref.yaml", "--no-progress"], None, tmp_path).returncode == 0
    failed = _lptem_limited(["run", "out.yaml", "--no-progress"], 12_000, tmp_path)
    # lptem's own report is one line and exit 2 (Dask's loggers may add the tracebacks
    # of the failed tasks above it)
    last = failed.stderr.strip().splitlines()[-1]
    assert failed.returncode == 2, failed.stderr[-2000:]
    assert last.startswith("lptem: error:") and "File too large" in last, last
    store = tmp_path / "out" / "movie0.zarr"
    assert not all(read_compute_log(store, s) for s in ("maps", "labels", "regions"))
    assert not list(store.rglob("*.partial"))  # Zarr's failed chunk writes left nothing
    done_before = {p.relative_to(store) for p in store.glob(f"{STATE_DIR}/*/*.done")}
    rerun = _lptem_limited(["run", "out.yaml", "--no-progress"], None, tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    _assert_same(_snapshot(tmp_path / "ref" / "movie0.zarr"), _snapshot(store))
    for marker in done_before:  # chunks finished before the failure were not recomputed
        stage, chunk = marker.parent.name, int(marker.stem)
        assert read_compute_log(store, stage).count(chunk) == 1, marker


def test_second_run_on_same_output_refused(inputs: Path, tmp_path: Path):  # noqa: F811
    """A held lock (this live process): `run_pipeline` refuses the run, naming pid and host."""
    from lptem_dask.cluster import make_client

    cfg = config_from_mapping(
        PipelineConfig,
        _config(inputs, tmp_path / "out", videos=[str(inputs / "movie0.tif")]),
    )
    store = tmp_path / "out" / "movie0.zarr"
    with (
        store_lock(store) as lock,
        make_client(ClusterConfig(n_workers=1, threads_per_worker=1, dashboard_port=0)) as client,
    ):
        with pytest.raises(LockedError) as err:
            run_pipeline(cfg, client=client, progress=False)
        assert lock.exists()  # the second run left the owner's lock alone
        owner = json.loads(lock.read_text())
    msg = str(err.value)
    assert f"pid {os.getpid()}" in msg and socket.gethostname() in msg and "lock" in msg
    assert owner == {"pid": os.getpid(), "host": socket.gethostname(), "what": "run"}
    assert not store.exists()  # nothing of the locked output was touched
    assert not lock.exists()  # released when the owner finished


def test_lock_held_by_another_process(tmp_path: Path):
    """A second process is refused with LockedError; a dead owner's lock is taken over."""
    store = tmp_path / "v.zarr"
    code = (
        "import sys, time; from lptem_dask.store import store_lock\n"
        f"with store_lock({str(store)!r}):\n"
        "    print('held', flush=True); time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(LockedError) as err, store_lock(store):
            pass
        msg = str(err.value)
        assert f"pid {holder.pid}" in msg and f"host {socket.gethostname()}" in msg
        assert "v.zarr.lock" in msg and "delete the lock file" in msg
    finally:
        holder.kill()  # SIGKILL: the lock file stays behind, stale
        holder.wait()
    assert (tmp_path / "v.zarr.lock").exists()
    with store_lock(store) as lock:  # its owner is dead: taken over
        assert json.loads(lock.read_text())["pid"] == os.getpid()


def test_cli_turns_locked_error_into_one_line(tmp_path: Path, capsys, monkeypatch):
    """The CLI contract for LockedError (and every LptemError): one line, exit 2."""
    import lptem_dask.io as io_mod

    def locked(*args, **kwargs):
        with store_lock(tmp_path / "v.zarr"), store_lock(tmp_path / "v.zarr"):
            pass  # pragma: no cover

    monkeypatch.setattr(io_mod, "ingest", locked)
    code, _, err = _run_cli(["ingest", "x.tif", str(tmp_path / "v.zarr")], capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"pid {os.getpid()}" in err and socket.gethostname() in err


# =========================================================================== bad input
# Each builder writes a bad input under a folder and returns its path.


def _png_bytes(dtype=np.uint8) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 200, (32, 32)).astype(dtype)).save(
        buf, format="PNG"
    )
    return buf.getvalue()


def _jpg_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 200, (32, 32), np.uint8)).save(
        buf, format="JPEG"
    )
    return buf.getvalue()


def _tif_bytes(d: Path) -> bytes:
    tifffile.imwrite(d / "_src.tif", np.ones((3, 16, 16), np.uint16), photometric="minisblack")
    data = (d / "_src.tif").read_bytes()
    (d / "_src.tif").unlink()
    return data


def _cut(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _garble(data: bytes, keep: int = 16) -> bytes:
    rng = np.random.default_rng(3)
    return data[:keep] + rng.integers(0, 256, len(data) - keep, np.uint8).tobytes()


def _video_bytes(d: Path, ext: str, n: int = 10) -> bytes:
    p = d / f"_src.{ext}"
    write_video(
        p, np.zeros((n, 16, 16), np.uint8), fps=10, codec="mjpeg" if ext == "avi" else "libx264"
    )
    data = p.read_bytes()
    p.unlink()
    return data


def _shared(name: str) -> bytes:
    from conftest import shared_data

    pytest.importorskip("rsciio")
    return shared_data(f"formats/{name}").read_bytes()


def _write(name: str, make: Callable[[Path], bytes]) -> Callable[[Path], Path]:
    def build(d: Path) -> Path:
        p = d / name
        p.write_bytes(make(d))
        return p

    return build


def _ingested(d: Path, name: str = "s.zarr") -> Path:
    return ingest(from_array(np.arange(4 * 8 * 8, dtype=np.uint16).reshape(4, 8, 8)), d / name)


def _zarr_bad_metadata(d: Path) -> Path:
    p = _ingested(d)
    (p / "zarr.json").write_text("{not json")
    return p


def _zarr_empty_array_metadata(d: Path) -> Path:
    p = _ingested(d)
    (p / "image" / "zarr.json").write_text("")
    return p


def _zarr_truncated_chunks(d: Path) -> Path:
    p = _ingested(d)
    for c in (p / "image" / "c").rglob("*"):
        if c.is_file():
            c.write_bytes(c.read_bytes()[:5])
    return p


def _zarr_empty_dir(d: Path) -> Path:
    (d / "e.zarr").mkdir()
    return d / "e.zarr"


def _zarr_zero_frames(d: Path) -> Path:
    import zarr

    zarr.create_array(str(d / "z.zarr"), shape=(0, 8, 8), chunks=(1, 8, 8), dtype="u2")
    return d / "z.zarr"


def _zero_frame_video(d: Path) -> Path:
    p = d / "none.mp4"
    write_video(p, np.zeros((0, 16, 16), np.uint8), fps=10, codec="libx264")
    if not p.exists():  # pragma: no cover - ffmpeg wrote nothing at all
        p.write_bytes(b"")
    return p


def _folder_mixed_dtype(d: Path) -> Path:
    f = d / "mixed"
    f.mkdir()
    (f / "0.png").write_bytes(_png_bytes(np.uint8))
    Image.fromarray(np.full((32, 32), 300, np.uint16)).save(f / "1.png")
    return f


def _folder_only_symlink_loops(d: Path) -> Path:
    f = d / "loops"
    f.mkdir()
    os.symlink(f / "a.png", f / "b.png")
    os.symlink(f / "b.png", f / "a.png")
    os.symlink(f, f / "self")
    return f


def _file_symlink_loop(d: Path) -> Path:
    os.symlink(d / "l2.tif", d / "l1.tif")
    os.symlink(d / "l1.tif", d / "l2.tif")
    return d / "l1.tif"


BAD_INPUTS: dict[str, Callable[[Path], Path]] = {
    "truncated png": _write("t.png", lambda d: _cut(_png_bytes())),
    "corrupt png": _write("c.png", lambda d: _garble(_png_bytes())),
    "png header only": _write("h.png", lambda d: _png_bytes()[:20]),
    "truncated jpg": _write("t.jpg", lambda d: _cut(_jpg_bytes())),
    "corrupt jpg": _write("c.jpg", lambda d: _garble(_jpg_bytes(), keep=4)),
    "truncated avi": _write("t.avi", lambda d: _cut(_video_bytes(d, "avi"))),
    "corrupt avi": _write("c.avi", lambda d: _garble(_video_bytes(d, "avi"), keep=64)),
    "corrupt mp4": _write("c.mp4", lambda d: _garble(_video_bytes(d, "mp4"), keep=64)),
    "0-frame mp4": _zero_frame_video,
    "corrupt mrc mode": _write("c.mrc", lambda d: b"\x10\x00\x00\x00" * 3 + b"\xff" * 1012),
    "truncated dm4": _write("t.dm4", lambda d: _cut(_shared("test-1.dm4"))),
    "corrupt dm4": _write("c.dm4", lambda d: _garble(_shared("test-1.dm4"))),
    "corrupt dm3": _write("c.dm3", lambda d: _garble(_shared("test-1.dm3"))),
    "truncated emd": _write("t.emd", lambda d: _cut(_shared("fei_example_tem_stack.emd"))),
    "corrupt emd": _write("c.emd", lambda d: _garble(_shared("fei_example_tem_stack.emd"))),
    "truncated ser": _write("t.ser", lambda d: _cut(_shared("128x128-TEM_search_1.ser"))),
    "corrupt ser": _write("c.ser", lambda d: _garble(_shared("128x128-TEM_search_1.ser"))),
    "zarr: corrupt group metadata": _zarr_bad_metadata,
    "zarr: empty array metadata": _zarr_empty_array_metadata,
    "zarr: truncated chunks": _zarr_truncated_chunks,
    "zarr: empty folder": _zarr_empty_dir,
    "zarr: 0 frames": _zarr_zero_frames,
    "zero-byte jpg": _write("z.jpg", lambda d: b""),
    "zero-byte tiff": _write("z.tiff", lambda d: b""),
    "zero-byte dm4": _write("z.dm4", lambda d: b""),
    "zero-byte ser": _write("z.ser", lambda d: b""),
    "wrong extension: png named .tif": _write("png.tif", lambda d: _png_bytes()),
    "wrong extension: tif named .dm3": _write("tif.dm3", _tif_bytes),
    "wrong extension: tif named .emd": _write("tif.emd", _tif_bytes),
    "wrong extension: tif named .ser": _write("tif.ser", _tif_bytes),
    "wrong extension: tif named .mrc": _write("tif.mrc", _tif_bytes),
    "wrong extension: text named .avi": _write("text.avi", lambda d: b"hello, world\n" * 50),
    "folder mixing frame dtypes": _folder_mixed_dtype,
    "folder of symlink loops only": _folder_only_symlink_loops,
    "file that is a symlink loop": _file_symlink_loop,
}

#: words that show the message says how to fix the problem
FIX_WORDS = (
    "copy it again",
    "replace",
    "re-export",
    "write it again",
    "write the store again",
    "check the path",
    "convert",
    "point to",
    "move the odd file",
    "remove it",
)


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_refused_with_name_and_fix(case: str, tmp_path: Path, capsys):
    src = BAD_INPUTS[case](tmp_path)
    with pytest.raises(LptemError) as err:
        open_video(src).values  # noqa: B018 - refused at open or, at the latest, when read
    msg = str(err.value)
    assert src.name in msg, msg
    assert any(w in msg for w in FIX_WORDS), msg
    # the CLI: one line on stderr, exit 2, no traceback, no output left behind
    code, _, stderr = _run_cli(["ingest", str(src), str(tmp_path / "o.zarr")], capsys)
    assert code == 2, stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr and src.name in stderr
    assert not (tmp_path / "o.zarr").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_symlink_loops_beside_real_frames_are_skipped(tmp_path: Path):
    f = _folder_only_symlink_loops(tmp_path)
    Image.fromarray(np.full((32, 32), 7, np.uint8)).save(f / "0.png")
    v = open_video(f)
    assert v.shape == (1, 32, 32) and int(v.values.max()) == 7


def test_nonfinite_and_constant_frames_accepted_and_reported(tmp_path: Path, capsys):
    a = np.random.default_rng(0).normal(100, 5, (6, 16, 16)).astype(np.float32)
    a[1, 2, 3] = np.nan
    a[2] = np.inf
    a[4] = 42.0  # constant frame
    a[5] = 0.0  # constant frame
    tifffile.imwrite(tmp_path / "f.tif", a, photometric="minisblack")
    v = open_video(tmp_path / "f.tif")
    np.testing.assert_array_equal(v.values, a)
    assert describe(v)["nonfinite_frames"] == 2
    code, out, _ = _run_cli(["info", str(tmp_path / "f.tif"), "--json"], capsys)
    assert code == 0 and json.loads(out)["nonfinite_frames"] == 2
    # accepted end to end: ingested exactly
    code, _, err = _run_cli(["ingest", str(tmp_path / "f.tif"), str(tmp_path / "f.zarr")], capsys)
    assert code == 0, err
    np.testing.assert_array_equal(open_video(tmp_path / "f.zarr").values, a)


def test_absurd_header_dims_refused_with_little_memory(tmp_path: Path):
    """Headers claiming terapixels are refused from the header: peak allocation < 20 MB."""
    import struct
    import zlib

    def png(width: int, height: int) -> bytes:
        def chunk(kind: bytes, data: bytes) -> bytes:
            crc = struct.pack(">I", zlib.crc32(kind + data))
            return struct.pack(">I", len(data)) + kind + data + crc

        ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
        idat = zlib.compress(b"\x00" * 1000)
        return (
            b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
        )

    (tmp_path / "big.png").write_bytes(png(30000, 30000))
    (tmp_path / "huge.png").write_bytes(png(100000, 100000))
    write_mrc(tmp_path / "m.mrc", np.zeros((2, 4, 4), np.int16), pixel_A=1.0)
    raw = bytearray((tmp_path / "m.mrc").read_bytes())
    raw[0:12] = np.array([2**20, 2**20, 10**6], "<i4").tobytes()
    (tmp_path / "m.mrc").write_bytes(bytes(raw))
    for name in ("big.png", "huge.png", "m.mrc"):
        if name.endswith(".mrc"):
            pytest.importorskip("rsciio")
        tracemalloc.start()
        try:
            with pytest.raises(LptemError, match=name.replace(".", r"\.")):
                open_video(tmp_path / name).isel(frame=0).values  # noqa: B018
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 20e6, (name, peak)


def test_non_utf8_file_names(tmp_path: Path):
    a = np.arange(3 * 8 * 8, dtype=np.uint16).reshape(3, 8, 8)
    raw = os.fsencode(str(tmp_path)) + b"/bad\xffname.tif"
    tifffile.imwrite(os.fsdecode(raw), a, photometric="minisblack")
    for path in (raw, os.fsdecode(raw)):  # bytes, and str with a surrogate escape
        np.testing.assert_array_equal(open_video(path).values, a)
        assert describe(path)["frames"] == 3
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    ok = subprocess.run([LPTEM, "info", raw], capture_output=True, env=env, timeout=120)
    assert ok.returncode == 0, ok.stderr.decode(errors="replace")
    assert b"frames: 3" in ok.stdout
    missing = os.fsencode(str(tmp_path)) + b"/gone\xfe.tif"
    bad = subprocess.run([LPTEM, "info", missing], capture_output=True, env=env, timeout=120)
    err = bad.stderr.decode(errors="replace")
    assert bad.returncode == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "gone" in err and "does not exist" in err


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("videos: [a.tif]\noutput_dir: out\nframe_rate: 3\n", "frame_rate"),
        ("videos: [a.tif]\noutput_dir: out\npixel_size_nm: fast\n", "pixel_size_nm"),
        ("videos: [a.tif]\noutput_dir: out\nlink: {search_range_nm: [1, 2]}\n", "search_range_nm"),
        ("videos: []\noutput_dir: out\n", "videos"),
        ("videos: [does-not-exist-*.tif]\noutput_dir: out\n", "matches no file"),
        ("[" * 3000 + "]" * 3000, "too deeply"),
    ],
    ids=["unknown key", "wrong type", "wrong nested type", "empty manifest", "no match", "deep"],
)
def test_bad_run_config_one_line_exit_2(text: str, needle: str, tmp_path: Path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(text)
    code, _, err = _run_cli(["run", str(cfg), "--no-progress"], capsys)
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err and needle in err, err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("*.zarr"))


# =========================================================================== never executing


#: calls that run or unpickle what they are given, and where the package may make them
ALLOWED_DANGEROUS = {
    # the module object the user passed to predict_maps in this very session, shipped
    # to workers by cloudpickle (like any Dask task); never bytes read from a file
    ("segment/_model_cache.py", "pickle.loads"),
}


def _dangerous_calls(tree: ast.AST) -> list[tuple[str, int]]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = (
            f.id
            if isinstance(f, ast.Name)
            else f"{getattr(f.value, 'id', '?')}.{f.attr}"
            if isinstance(f, ast.Attribute)
            else ""
        )
        kwargs = {k.arg: k.value for k in node.keywords}
        if name in ("eval", "exec", "compile", "__import__"):
            found.append((name, node.lineno))
        elif name.split(".")[-1] in ("load", "loads") and name.split(".")[0] in (
            "pickle",
            "cPickle",
            "cloudpickle",
            "marshal",
            "dill",
            "joblib",
        ):
            found.append((name, node.lineno))
        elif name == "torch.load":
            wo = kwargs.get("weights_only")
            if not (isinstance(wo, ast.Constant) and wo.value is True):
                found.append((name, node.lineno))
        elif name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load"):
            found.append((name, node.lineno))
        elif name in ("np.load", "numpy.load"):
            ap = kwargs.get("allow_pickle")
            if isinstance(ap, ast.Constant) and ap.value is True:
                found.append((name, node.lineno))
        elif name.startswith("subprocess.") or name == "os.system":
            shell = kwargs.get("shell")
            if name == "os.system" or (isinstance(shell, ast.Constant) and shell.value):
                found.append((name, node.lineno))
    return found


def test_package_never_evaluates_or_unpickles_what_it_reads():
    """No eval/exec, no pickle of files, torch.load only with weights_only=True."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = str(path.relative_to(PACKAGE))
        for name, line in _dangerous_calls(ast.parse(path.read_text(), filename=str(path))):
            if (rel, name) not in ALLOWED_DANGEROUS:
                offenders.append(f"{rel}:{line}: {name}")
    assert not offenders, offenders
    # the scanner itself finds what it must
    probe = ast.parse(
        "eval(x)\npickle.load(f)\ntorch.load(p)\ntorch.load(p, weights_only=False)\n"
        "yaml.load(t)\nsubprocess.run(c, shell=True)\ntorch.load(p, weights_only=True)\n"
    )
    assert [n for n, _ in _dangerous_calls(probe)] == [
        "eval",
        "pickle.load",
        "torch.load",
        "torch.load",
        "yaml.load",
        "subprocess.run",
    ]


def test_malicious_pickle_checkpoint_via_pipeline_never_runs(inputs: Path, tmp_path: Path):  # noqa: F811
    """A pickle whose __reduce__ writes a file, given as `segment.model`: refused, never run."""
    import pickle

    target = tmp_path / "pwned.txt"

    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(target)!r}, 'w').write('pwned')",))

    ckpt = tmp_path / "evil.pt"
    ckpt.write_bytes(pickle.dumps({"weight": Evil()}))
    from lptem_dask.models import load_model

    with pytest.raises(LptemError):
        load_model(ckpt)
    with pytest.raises(LptemError):
        from lptem_dask.segment.infer import predict_maps

        predict_maps(from_array(np.zeros((2, 32, 32), np.float32)), model=str(ckpt)).compute()
    assert not target.exists()
