"""``lptem run``: every stage per chunk, resumable, invalidation by stage, faults survived."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml

from lptem_dask.config import ClusterConfig, PipelineConfig, config_from_mapping
from lptem_dask.pipeline import FAULT_PAUSE_ENV, STATE_DIR, read_compute_log, run_pipeline
from lptem_dask.store import LABELS_ARRAY, open_store_dataset, table_path

N_FRAMES, SIZE, PER_CHUNK = 12, 48, 4


def _video(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    centres = rng.uniform(10, SIZE - 10, size=(3, 2))
    frames = []
    for _ in range(N_FRAMES):
        centres += rng.normal(0, 0.7, size=centres.shape)
        t = np.zeros((SIZE, SIZE))
        for cy, cx in centres:
            t += np.clip(25 - (yy - cy) ** 2 - (xx - cx) ** 2, 0, None) ** 0.5
        frames.append(rng.poisson(1000 * np.exp(-t / 15)))
    return np.asarray(frames, np.uint16)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    import torch

    from lptem_dask.segment._checkpoint import save_checkpoint
    from lptem_dask.segment.unet import UNetConfig, build_unet

    root = tmp_path_factory.mktemp("pipeline_inputs")
    for k in range(3):
        tifffile.imwrite(root / f"movie{k}.tif", _video(k))
    torch.manual_seed(0)
    model = build_unet(UNetConfig(depth=2, base_width=4, norm="none"))
    # a random tiny network: its maps are arbitrary but deterministic, which is all
    # the bookkeeping tests need
    save_checkpoint(model, {"name": "tiny-random-test-model"}, root / "tiny.safetensors")
    return root


def _config(inputs: Path, out: Path, **overrides) -> dict:
    cfg = {
        "videos": [str(inputs / "movie*.tif")],
        "output_dir": str(out),
        "pixel_size_nm": 2.0,
        "frame_interval_s": 0.1,
        "frames_per_chunk": PER_CHUNK,
        "cluster": {"kind": "local", "n_workers": 2, "threads_per_worker": 1, "dashboard_port": 0},
        "segment": {"model": str(inputs / "tiny.safetensors"), "threshold": 0.5},
        "link": {"search_range_nm": 10.0, "memory": 1, "min_length": 1},
        "report": False,
    }
    for key, value in overrides.items():
        if isinstance(value, dict):
            cfg[key] = {**cfg.get(key, {}), **value}
        else:
            cfg[key] = value
    return cfg


def _snapshot(store: Path) -> dict[str, object]:
    """Everything the run computed, in a form compared bit for bit."""
    ds = open_store_dataset(store)
    snap: dict[str, object] = {}
    for name in sorted(ds.data_vars):
        arr = np.ascontiguousarray(ds[name].values)
        snap[name] = (arr.dtype.str, arr.shape, hashlib.sha256(arr.tobytes()).hexdigest())
    for table in ("regions", "contours", "tracks"):
        path = table_path(store, table)
        if path.exists():
            df = pd.read_parquet(path)
            keys = [c for c in ("frame", "label", "point") if c in df.columns]
            snap[table] = df.sort_values(keys).reset_index(drop=True)
    return snap


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], pd.DataFrame):
            pd.testing.assert_frame_equal(a[key], b[key], check_exact=True)
        else:
            assert a[key] == b[key], key


def _counts(store: Path, stage: str) -> dict[int, int]:
    out: dict[int, int] = {}
    for c in read_compute_log(store, stage):
        out[c] = out.get(c, 0) + 1
    return out


@pytest.fixture(scope="module")
def client():
    from lptem_dask.cluster import make_client

    with make_client(ClusterConfig(n_workers=2, threads_per_worker=1, dashboard_port=0)) as c:
        yield c


def test_run_resume_and_invalidate(inputs: Path, tmp_path: Path, client):
    out = tmp_path / "out"
    cfg = config_from_mapping(PipelineConfig, _config(inputs, out))
    status = run_pipeline(cfg, client=client, progress=False)
    assert list(status["status"]) == ["done"] * 3
    assert (out / "run_status.csv").exists()
    store = out / "movie0.zarr"
    ds = open_store_dataset(store)
    assert set(ds.data_vars) >= {"image", "probability", "labels"}
    np.testing.assert_array_equal(ds["image"].values, _video(0))
    assert ds["labels"].dtype == np.int32
    assert ds["image"].chunks[0] == (PER_CHUNK,) * (N_FRAMES // PER_CHUNK)
    regions = pd.read_parquet(table_path(store, "regions"))
    assert set(regions["frame"]) <= set(range(N_FRAMES))
    np.testing.assert_allclose(ds["time"].values, np.arange(N_FRAMES) * 0.1)
    np.testing.assert_allclose(regions["time_s"], regions["frame"] * 0.1)
    assert "particle" in pd.read_parquet(table_path(store, "tracks")).columns
    n_chunks = N_FRAMES // PER_CHUNK
    for stage in ("image", "maps", "labels", "regions"):
        assert _counts(store, stage) == dict.fromkeys(range(n_chunks), 1)
    first = _snapshot(store)

    # a rerun does nothing
    status = run_pipeline(cfg, client=client, progress=False)
    assert list(status["status"]) == ["skipped"] * 3
    for stage in ("image", "maps", "labels", "regions"):
        assert _counts(store, stage) == dict.fromkeys(range(n_chunks), 1)

    # a changed linking setting redoes tracks only
    cfg2 = config_from_mapping(PipelineConfig, _config(inputs, out, link={"search_range_nm": 8.0}))
    status = run_pipeline(cfg2, client=client, progress=False)
    assert list(status["status"]) == ["done"] * 3
    for stage in ("image", "maps", "labels", "regions"):
        assert _counts(store, stage) == dict.fromkeys(range(n_chunks), 1)

    # a deleted chunk is detected and recomputed, alone
    labels_chunk = store / LABELS_ARRAY / "c" / "1" / "0" / "0"
    assert labels_chunk.exists()
    labels_chunk.unlink()
    status = run_pipeline(cfg2, client=client, progress=False)
    assert status.set_index("store").loc[str(store), "status"] == "done"
    assert _counts(store, "labels") == {0: 1, 1: 2, 2: 1}
    assert _counts(store, "maps") == dict.fromkeys(range(n_chunks), 1)
    again = _snapshot(store)
    for key in ("image", "probability", "labels", "regions"):
        if isinstance(first[key], pd.DataFrame):
            pd.testing.assert_frame_equal(first[key], again[key], check_exact=True)
        else:
            assert first[key] == again[key]

    # a changed threshold redoes labels and what follows, never the U-Net maps
    cfg3 = config_from_mapping(
        PipelineConfig,
        _config(inputs, out, link={"search_range_nm": 8.0}, segment={"threshold": 0.6}),
    )
    run_pipeline(cfg3, client=client, progress=False)
    assert _counts(store, "maps") == dict.fromkeys(range(n_chunks), 1)
    assert _counts(store, "labels") == {0: 2, 1: 3, 2: 2}
    assert _counts(store, "regions") == {0: 2, 1: 2, 2: 2}


def test_one_failing_video_does_not_stop_the_others(inputs: Path, tmp_path: Path, client):
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00 this is not a real tiff")
    cfg = _config(inputs, tmp_path / "out")
    cfg["videos"] = [str(inputs / "movie0.tif"), str(bad)]
    status = run_pipeline(config_from_mapping(PipelineConfig, cfg), client=client, progress=False)
    by = status.set_index("video")
    assert by.loc[str(inputs / "movie0.tif"), "status"] == "done"
    assert by.loc[str(bad), "status"] == "failed"
    assert "broken.tif" in by.loc[str(bad), "error"]


def _lptem(config: Path, env: dict | None = None) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("lptem")
    return subprocess.Popen(
        [str(exe), "run", str(config), "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: the kill takes the workers too
        env={**os.environ, **(env or {})},
    )


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # pragma: no cover - it had finished
        pass
    proc.wait(timeout=60)


def _markers(out: Path) -> set[tuple[str, str, int]]:
    found = set()
    for marker in out.glob(f"*.zarr/{STATE_DIR}/*/*.done"):
        found.add((marker.parents[2].name, marker.parent.name, int(marker.stem)))
    return found


@pytest.mark.slow
def test_killed_runs_resume_bit_identical(inputs: Path, tmp_path: Path):
    """SIGKILL `lptem run` at three random moments (one mid chunk write); rerun each time."""
    ref_cfg = tmp_path / "ref.yaml"
    ref_cfg.write_text(yaml.safe_dump(_config(inputs, tmp_path / "ref")))
    t0 = time.time()
    proc = _lptem(ref_cfg)
    assert proc.wait(timeout=600) == 0, proc.stderr.read().decode() if proc.stderr else ""
    t_ref = time.time() - t0

    out = tmp_path / "killed"
    cfg = tmp_path / "killed.yaml"
    cfg.write_text(yaml.safe_dump(_config(inputs, out)))
    rng = random.Random(20261125)
    markers_at_kill: list[set] = []
    for attempt in range(3):
        if attempt == 0:
            # in the middle of a chunk write: half of a chunk's frames are on disk
            proc = _lptem(cfg, env={FAULT_PAUSE_ENV: "3"})
            deadline = time.time() + 300
            while not list(out.glob(f"*.zarr/{STATE_DIR}/writing-*")):
                assert time.time() < deadline and proc.poll() is None, "no chunk write was caught"
                time.sleep(0.05)
        else:
            # at a random moment once this attempt has finished a chunk (the start-up of
            # cluster and imports is most of a run this small, so a random fraction of the
            # reference time could fall before any work); writes slowed a little so that
            # work remains to be killed
            before = _markers(out)
            proc = _lptem(cfg, env={FAULT_PAUSE_ENV: "0.3"})
            deadline = time.time() + 300
            while not _markers(out) - before:
                assert time.time() < deadline and proc.poll() is None, "no chunk finished"
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 0.2) * t_ref)
            assert proc.poll() is None, "the run finished before it could be killed"
        _kill_group(proc)
        markers_at_kill.append(_markers(out))
    proc = _lptem(cfg)
    assert proc.wait(timeout=600) == 0, proc.stderr.read().decode() if proc.stderr else ""

    for video in ("movie0", "movie1", "movie2"):
        _assert_same(
            _snapshot(tmp_path / "ref" / f"{video}.zarr"), _snapshot(out / f"{video}.zarr")
        )
    # a chunk completed before a kill is never computed again
    completed = set().union(*markers_at_kill)
    assert completed, "no chunk had finished at any kill"
    for store_name, stage, chunk in completed:
        counts = _counts(out / store_name, stage)
        assert counts[chunk] == 1, (store_name, stage, chunk, counts)
    # at most the chunks in flight at each kill (2 workers x 1 thread) were redone
    for video in ("movie0", "movie1", "movie2"):
        for stage in ("image", "maps", "labels", "regions"):
            extra = sum(n - 1 for n in _counts(out / f"{video}.zarr", stage).values())
            assert extra <= 2 * 3


def test_classical_baseline_in_the_pipeline(inputs: Path, tmp_path: Path, client):
    cfg = _config(
        inputs, tmp_path / "out", segment={"method": "otsu", "baseline_params": {"sigma_rel": 0.1}}
    )
    cfg["videos"] = [str(inputs / "movie0.tif")]
    status = run_pipeline(config_from_mapping(PipelineConfig, cfg), client=client, progress=False)
    assert list(status["status"]) == ["done"]
    store = tmp_path / "out" / "movie0.zarr"
    ds = open_store_dataset(store)
    assert "probability" not in ds and "labels" in ds
    regions = pd.read_parquet(table_path(store, "regions"))
    # three dark discs per frame in every frame
    assert regions.groupby("frame").size().median() == 3


def test_all_zero_chunk_is_written_so_resume_finds_it(tmp_path):
    # a frame chunk without particles has all-zero labels; Zarr skips writing such
    # chunks by default, and a resumed run would then recompute it every time
    import zarr

    from lptem_dask.pipeline import _write_region, _zarr_chunk_exists

    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="a", zarr_format=3)
    group.create_array("labels", shape=(4, 8, 8), chunks=(2, 8, 8), dtype="int32", fill_value=0)
    _write_region(tmp_path / "s.zarr", "labels", 2, np.zeros((2, 8, 8), np.int32))
    assert _zarr_chunk_exists(tmp_path / "s.zarr", "labels", 1)
    assert not _zarr_chunk_exists(tmp_path / "s.zarr", "labels", 0)


def test_particle_size_and_polarity_decided_once_per_video(inputs, tmp_path):
    # with particle_size_px null and polarity auto, every chunk is segmented with
    # the same settings, estimated from frames spread over the whole video
    import torch

    from lptem_dask.pipeline import _stage_record, plan_video
    from lptem_dask.segment._checkpoint import save_checkpoint
    from lptem_dask.segment._normalize import decide_polarity
    from lptem_dask.segment.infer import _sample_index, estimate_size_with_model, prepare_model
    from lptem_dask.segment.unet import UNetConfig, build_unet

    torch.manual_seed(0)
    model = build_unet(UNetConfig(depth=2, base_width=4, norm="none"))
    card = {"name": "sized", "particle_size_px": {"median": 20.0, "p5": 10.0, "p95": 30.0}}
    save_checkpoint(model, card, tmp_path / "sized.safetensors")
    cfg = config_from_mapping(
        PipelineConfig,
        _config(
            inputs,
            tmp_path / "out",
            segment={"model": str(tmp_path / "sized.safetensors"), "polarity": "auto"},
        ),
    )
    src, store = inputs / "movie0.tif", tmp_path / "out" / "movie0.zarr"
    plan = plan_video(src, store, cfg, until="maps")
    video = _video(0)
    sample = video[_sample_index(len(video))]
    assert plan.maps_overrides["polarity"] == decide_polarity(sample) == "dark"
    spec = prepare_model(str(tmp_path / "sized.safetensors"))
    size, scale = estimate_size_with_model(sample, spec, polarity="dark")
    # every chunk is given the size that yields the decided rescaling
    assert plan.maps_overrides["particle_size_px"] == pytest.approx(20.0 / scale)
    record = _stage_record(store, "maps")
    assert record["resolved"] == plan.maps_overrides
    assert record["estimated_particle_size_px"] == pytest.approx(size)
    # a second planning of the same store reuses the recorded decision
    assert plan_video(src, store, cfg, until="maps").maps_overrides == plan.maps_overrides


def test_regions_stage_hash_follows_the_table_schema(monkeypatch, tmp_path):
    """A new column in the regions schema changes the regions stage (and what follows),
    not the segmentation: a resumed run recomputes regions instead of mixing parts."""
    from lptem_dask import pipeline, schema
    from lptem_dask.config import PipelineConfig

    src = tmp_path / "v.tif"
    src.write_bytes(b"not read")
    cfg = PipelineConfig(videos=[str(src)])
    before = pipeline.stage_hashes(cfg, src)
    monkeypatch.setitem(schema.REGIONS, "new_column", ("float64", "1"))
    after = pipeline.stage_hashes(cfg, src)
    for st in ("image", "maps", "labels"):
        assert after[st] == before[st]
    for st in ("regions", "tracks"):
        assert after[st] != before[st]


def test_workers_import_the_chunk_modules_while_the_client_plans(client):
    """One warm-up task per worker imports torch & co; it runs there, and only there."""
    import sys

    from lptem_dask.pipeline import CHUNK_MODULES, _await_warm_up, _warm_workers

    futures = _warm_workers(client)
    _await_warm_up(futures)  # what run_videos does before it submits anything else
    assert all(f.done() for f in futures)
    workers = set(client.scheduler_info()["workers"])
    assert len(futures) == len(workers) == 2
    seconds = client.gather(futures)
    assert all(s >= 0.0 for s in seconds)
    who = client.who_has(futures)
    assert {w for ws in who.values() for w in ws} == workers
    loaded = client.run(lambda: [m in sys.modules for m in CHUNK_MODULES])
    assert all(all(v) for v in loaded.values())


def test_the_late_warm_up_waits_for_its_future_and_yields_to_other_tasks(client):
    """The imports of linking & co start after the first chunk task, behind ready tasks."""
    import time
    import uuid

    from distributed import get_task_stream

    from lptem_dask.pipeline import TASK_MODULES, _warm_workers

    def pause(seconds, _dep=None):
        time.sleep(seconds)
        return seconds

    worker = next(iter(client.scheduler_info()["workers"]))
    pin = dict(workers=[worker], allow_other_workers=False, pure=False)
    with get_task_stream(client) as stream:
        first = client.submit(pause, 1.0, **pin)
        # as in run_videos: the chunk tasks first, then the late imports at the lowest
        # priority; all become ready when `first` ends, and the others go first
        # (each its own task group: Dask holds back a large group of similar tasks on the
        # scheduler, "root-ish" queuing, and then the worker would see too few of them)
        others = [
            client.submit(pause, 0.2, first, key=f"other{i}-{uuid.uuid4().hex}", **pin)
            for i in range(4)
        ]
        late = _warm_workers(client, TASK_MODULES, after=first, priority=-100)
        client.gather([*others, *late])
    start = {}
    stop = {}
    where = {}
    for t in stream.data:
        (ss,) = [x for x in t["startstops"] if x["action"] == "compute"]
        start[t["key"]], stop[t["key"]], where[t["key"]] = ss["start"], ss["stop"], t["worker"]
    (mine,) = [f.key for f in late if where[f.key] == worker]
    assert len(late) == 2
    for f in late:
        assert start[f.key] >= stop[first.key]
    assert start[mine] >= max(start[f.key] for f in others)


def test_tasks_import_one_thread_at_a_time(tmp_path, monkeypatch):
    """Two threads importing modules for the first time do not import side by side."""
    import sys
    import threading

    from lptem_dask.pipeline import _IMPORTED, _import_serially

    log = tmp_path / "log.txt"
    for name in ("slow_mod_a", "slow_mod_b"):
        (tmp_path / f"{name}.py").write_text(
            "import threading, time\n"
            f"open({str(log)!r}, 'a').write('enter {name}\\n')\n"
            "time.sleep(0.2)\n"
            f"open({str(log)!r}, 'a').write('exit {name}\\n')\n"
        )
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("slow_mod_a", "slow_mod_b"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    threads = [
        threading.Thread(target=_import_serially, args=(order,))
        for order in (["slow_mod_a", "slow_mod_b"], ["slow_mod_b", "slow_mod_a"])
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    events = log.read_text().split("\n")[:-1]
    # each module once, and never two imports at the same time
    assert sorted(events) == sorted(
        ["enter slow_mod_a", "exit slow_mod_a", "enter slow_mod_b", "exit slow_mod_b"]
    )
    assert [e.split()[0] for e in events] == ["enter", "exit", "enter", "exit"]
    for name in ("slow_mod_a", "slow_mod_b"):
        sys.modules.pop(name, None)
        _IMPORTED.discard(name)


def test_a_pipeline_stage_names_the_shipped_model_it_used():
    """The segment stage's hash follows the weights of whichever shipped model it names."""
    from lptem_dask.errors import ConfigError
    from lptem_dask.models import SHIPPED_MODELS, shipped_model_paths
    from lptem_dask.pipeline import _model_fingerprint

    if not all(shipped_model_paths(n)[0].exists() for n in SHIPPED_MODELS):
        pytest.skip("the shipped models are not installed")
    prints = {name: _model_fingerprint(name) for name in SHIPPED_MODELS}
    assert prints["rods"].startswith("rods:") and prints["default"].startswith("default:")
    assert len(set(p.split(":")[1] for p in prints.values())) == len(prints)
    with pytest.raises(ConfigError, match="rods"):
        _model_fingerprint("no-such-model")


def test_test_time_augmentation_changes_the_maps_stage_only_when_on(tmp_path):
    from lptem_dask import pipeline
    from lptem_dask.config import PipelineConfig

    src = tmp_path / "v.tif"
    src.write_bytes(b"not read")
    off = pipeline.stage_hashes(PipelineConfig(videos=[str(src)]), src)
    off2 = pipeline.stage_hashes(PipelineConfig(videos=[str(src)], segment={"tta": False}), src)
    on = pipeline.stage_hashes(PipelineConfig(videos=[str(src)], segment={"tta": True}), src)
    assert off == off2  # stores made before the option keep their hashes
    assert on["image"] == off["image"]
    for st in ("maps", "labels", "regions", "tracks"):
        assert on[st] != off[st]
    cfg = PipelineConfig(videos=[str(src)], segment={"tta": True})
    assert pipeline._maps_kwargs(cfg)["tta"] is True


def test_a_training_set_is_never_processed_in_place(tmp_path):
    """`lptem segment train.zarr` on a store from `lptem simulate` (image (index, y, x)
    beside its truth `labels` and `boundary`) is refused before anything is written."""
    import xarray as xr

    from lptem_dask import pipeline
    from lptem_dask.config import PipelineConfig
    from lptem_dask.errors import InputError
    from lptem_dask.simulate import write_training_set

    store = write_training_set(tmp_path / "train.zarr", 2, "spheres", seed=3, progress=False)
    before = xr.open_zarr(store, consolidated=False).load()
    cfg = PipelineConfig(videos=[str(store)])
    with pytest.raises(InputError, match="not a video store.*--out"):
        pipeline.plan_video(store, store, cfg)
    after = xr.open_zarr(store, consolidated=False).load()
    assert sorted(after.data_vars) == sorted(before.data_vars)
    for name in ("labels", "boundary", "image"):
        np.testing.assert_array_equal(after[name].values, before[name].values)


def _freeze_count_in_child(q) -> None:  # runs in a spawned child process
    import gc

    from lptem_dask.pipeline import _freeze_imported_objects

    before = gc.get_freeze_count()
    _freeze_imported_objects()
    q.put((before, gc.get_freeze_count()))


def test_warm_up_freezes_the_gc_in_worker_processes_only():
    """Worker processes move their imported objects out of the collector's way
    (a faster exit); the client's own process, e.g. this test's, is left alone."""
    import gc
    import multiprocessing

    from lptem_dask.pipeline import _freeze_imported_objects

    before = gc.get_freeze_count()
    _freeze_imported_objects()
    assert gc.get_freeze_count() == before

    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_freeze_count_in_child, args=(q,))
    p.start()
    child_before, child_after = q.get(timeout=120)
    p.join(timeout=60)
    assert child_before == 0
    assert child_after > 10_000  # the child's modules and functions, now permanent
