"""Property tests: any bytes in, either a video or a ``LptemError`` out.

Every reader (one per supported extension, plus the Zarr metadata reader) and
the YAML config loader are fed random bytes and randomly mutated valid files
(byte flips, truncations, insertions, header fields replaced by extreme
integers). Each example must return a video whose first frame decodes, or
raise :class:`~lptem_dask.errors.LptemError`: never another exception, a
crash or a hang (a per-example ``SIGALRM`` timeout), and never an allocation
sized from a lying header (the address space is capped during the test, so
such an allocation surfaces as ``MemoryError`` and fails the test).

The default run tries 50 examples per reader; ``-m slow`` runs 500.
"""

from __future__ import annotations

import contextlib
import resource
import signal
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from test_io import write_mrc, write_video

from lptem_dask.config import PipelineConfig, load_config
from lptem_dask.errors import LptemError
from lptem_dask.io import from_array, ingest, open_video

EXAMPLE_TIMEOUT_S = 20
#: headroom of address space above what the process already maps
AS_HEADROOM = 3 * 2**30

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "formats"
TEM_SEEDS = {
    ".dm3": "test_stackbuilder_imagestack.dm3",
    ".dm4": "test-1.dm4",
    ".emd": "fei_example_tem_stack.emd",
    ".ser": "128x128-TEM_search_1.ser",
}
EXTS = [".tif", ".png", ".jpg", ".mp4", ".avi", ".mrc", ".dm3", ".dm4", ".emd", ".ser"]


class ExampleTimeout(Exception):
    """An example ran past EXAMPLE_TIMEOUT_S: a hang."""


@contextlib.contextmanager
def _alarm(seconds: int) -> Iterator[None]:
    def on_alarm(signum, frame):
        raise ExampleTimeout(f"example ran past {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _vm_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[0]) * resource.getpagesize()


@pytest.fixture(scope="module")
def capped_memory() -> Iterator[None]:
    """Cap the address space a few GiB above the current one for the module."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = _vm_bytes() + AS_HEADROOM
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict[str, bytes]:
    """One small valid file per extension, the start point of mutations."""
    d = tmp_path_factory.mktemp("fuzz_seeds")
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (4, 16, 24), np.uint8)
    tifffile.imwrite(d / "s.tif", a.astype(np.uint16), photometric="minisblack")
    Image.fromarray(a[0]).save(d / "s.png")
    Image.fromarray(a[0]).save(d / "s.jpg", quality=90)
    write_video(d / "s.mp4", a, fps=10, codec="libx264")
    write_video(d / "s.avi", a, fps=10, codec="mjpeg")
    write_mrc(d / "s.mrc", a.astype(np.int16), pixel_A=2.0)
    out = {ext: (d / f"s{ext}").read_bytes() for ext in (".tif", ".png", ".jpg", ".mp4", ".avi")}
    out[".mrc"] = (d / "s.mrc").read_bytes()
    for ext, name in TEM_SEEDS.items():
        if (SHARED / name).exists():
            out[ext] = (SHARED / name).read_bytes()
    return out


@st.composite
def mutated(draw, seed: bytes) -> bytes:
    """A valid file damaged a few times: flips, cuts, insertions, extreme integers."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "int32", "delete"]))
        # mutations favour the header, where lengths and dimensions live
        hi = min(len(data), draw(st.sampled_from([64, 512, 4096, max(1, len(data))])))
        pos = draw(st.integers(0, max(0, hi - 1)))
        if kind == "flip" and data:
            data[pos] ^= draw(st.integers(1, 255))
        elif kind == "truncate":
            data = data[: draw(st.integers(0, len(data)))]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 64))]
        elif kind == "int32" and len(data) >= pos + 4:
            value = draw(st.sampled_from([0, 1, 2**15, 2**16 - 1, 2**31 - 1, 2**32 - 1]))
            data[pos : pos + 4] = struct.pack("<I", value)
    return bytes(data)


def _payload(ext: str, seeds: dict[str, bytes]):
    raw = st.binary(min_size=0, max_size=2048)
    return st.one_of(raw, mutated(seeds[ext])) if ext in seeds else raw


def _check_reader(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    with _alarm(EXAMPLE_TIMEOUT_S):
        try:
            video = open_video(path)
            first = np.asarray(video.isel(frame=0).values)
        except LptemError as exc:
            assert path.name in str(exc), f"error does not name the file: {exc}"
            return
    assert video.ndim == 3 and first.shape == video.shape[1:]


def _fuzz_reader(n: int):
    @pytest.mark.parametrize("ext", EXTS)
    @settings(
        max_examples=n,
        deadline=None,  # the SIGALRM guard is the per-example timeout
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    @given(data=st.data())
    def check(ext, data, seeds, capped_memory, tmp_path_factory):
        if ext in TEM_SEEDS:
            pytest.importorskip("rsciio")
        d = tmp_path_factory.getbasetemp() / "fuzz"
        d.mkdir(exist_ok=True)
        _check_reader(d / f"fuzz{ext}", data.draw(_payload(ext, seeds), label="payload"))

    return check


test_readers_fuzz = _fuzz_reader(50)
test_readers_fuzz_500 = pytest.mark.slow(_fuzz_reader(500))


# ------------------------------------------------------------------ Zarr metadata


@pytest.fixture(scope="module")
def zarr_seed(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("fuzz_zarr")
    ingest(from_array(np.arange(4 * 8 * 8, dtype=np.uint16).reshape(4, 8, 8)), d / "seed.zarr")
    return d / "seed.zarr"


def _fuzz_zarr(n: int):
    @settings(
        max_examples=n,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    @given(data=st.data())
    def check(data, zarr_seed, capped_memory, tmp_path_factory):
        import shutil

        d = tmp_path_factory.getbasetemp() / "fuzz_zarr_work"
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(zarr_seed, d / "v.zarr")
        files = sorted(p for p in (d / "v.zarr").rglob("*") if p.is_file())
        target = data.draw(st.sampled_from(files), label="file")
        target.write_bytes(data.draw(mutated(target.read_bytes()), label="payload"))
        with _alarm(EXAMPLE_TIMEOUT_S):
            try:
                video = open_video(d / "v.zarr")
                video.values  # noqa: B018 - every chunk, not only the first
            except LptemError as exc:
                assert "v.zarr" in str(exc), str(exc)

    return check


test_zarr_fuzz = _fuzz_zarr(50)
test_zarr_fuzz_500 = pytest.mark.slow(_fuzz_zarr(500))


# ------------------------------------------------------------------ config loader

_VALID_YAML = b"""\
videos: ["movies/*.tif"]
output_dir: out
pixel_size_nm: 0.5
frame_interval_s: 0.1
frames_per_chunk: 8
cluster: {kind: local, n_workers: 2, threads_per_worker: 1}
segment: {model: default, threshold: 0.5}
link: {search_range_nm: 10.0, memory: 1}
analyses: [diffusion]
report: false
"""

_yaml_text = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=True),
        st.text(max_size=20),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(
                st.sampled_from(
                    ["videos", "output_dir", "pixel_size_nm", "cluster", "segment", "link"]
                ),
                st.text(max_size=10),
            ),
            children,
            max_size=4,
        ),
    ),
    max_leaves=20,
)


def _yaml_payloads():
    import yaml

    structured = _yaml_text.map(lambda obj: yaml.safe_dump(obj).encode())
    nested = st.integers(1, 5000).map(lambda n: b"[" * n + b"]" * n)  # deep nesting
    aliases = st.just(  # a "billion laughs" alias bomb
        b'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
        + b"".join(
            f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},"
            f"*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)}]\n".encode()
            for i in range(8)
        )
    )
    return st.one_of(st.binary(max_size=512), structured, mutated(_VALID_YAML), nested, aliases)


def _fuzz_config(n: int):
    @settings(
        max_examples=n,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    @given(payload=_yaml_payloads())
    def check(payload, capped_memory, tmp_path_factory):
        p = tmp_path_factory.getbasetemp() / "fuzz_config.yaml"
        p.write_bytes(payload)
        with _alarm(EXAMPLE_TIMEOUT_S):
            try:
                cfg = load_config(p, PipelineConfig)
            except LptemError as exc:
                assert "fuzz_config.yaml" in str(exc), str(exc)
                return
        assert isinstance(cfg, PipelineConfig)

    return check


test_config_fuzz = _fuzz_config(50)
test_config_fuzz_500 = pytest.mark.slow(_fuzz_config(500))


def test_valid_seed_files_open(seeds, tmp_path):
    """Control: the unmutated seeds are videos, so the fuzzers start from real files."""
    for ext, blob in seeds.items():
        if ext in TEM_SEEDS:
            pytest.importorskip("rsciio")
        p = tmp_path / f"seed{ext}"
        p.write_bytes(blob)
        assert open_video(p).isel(frame=0).values.ndim == 2, ext
    p = tmp_path / "c.yaml"
    p.write_bytes(_VALID_YAML)
    assert load_config(p, PipelineConfig).frames_per_chunk == 8
