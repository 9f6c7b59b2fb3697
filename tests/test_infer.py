"""Dask inference: dtype invariance, tiling, chunking, laziness, model transport, checkpoints."""

from __future__ import annotations

import pickle

import dask
import dask.array as da
import numpy as np
import pytest
import torch
import xarray as xr

from lptem_dask.errors import InputError, ModelError
from lptem_dask.segment import _model_cache
from lptem_dask.segment._checkpoint import save_checkpoint
from lptem_dask.segment._scale import estimate_particle_size_px
from lptem_dask.segment.infer import predict_maps, predict_probability, segment
from lptem_dask.segment.unet import build_unet


def make_discs(n_frames, size, diam, *, cnr=3.0, seed=0, density=0.15):
    """Dark discs (diameter ``diam`` +-20 %) on a bright, noisy background (uint8)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    imgs, masks = [], []
    for _ in range(n_frames):
        m = np.zeros((size, size), bool)
        k = max(1, int(density * size * size / (np.pi * diam**2 / 4)))
        for _ in range(k):
            d = diam * rng.uniform(0.8, 1.2)
            cy, cx = rng.uniform(0, size, 2)
            m |= (yy - cy) ** 2 + (xx - cx) ** 2 <= (d / 2) ** 2
        img = 150.0 - cnr * 12 * m + rng.normal(0, 12, m.shape)
        imgs.append(np.clip(np.rint(img), 0, 255))
        masks.append(m)
    return np.array(imgs, np.uint8), np.array(masks)


def tiny_net(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = {"preset": "fast", "depth": 2, "base_width": 4}
    cfg.update(kw)
    net = build_unet(cfg)
    # give batch-norm layers non-trivial running statistics, and amplify the
    # convolutions so the random network's output varies clearly with its input
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
            if isinstance(m, torch.nn.Conv2d):
                m.weight.mul_(3.0)
    return net.eval()


def video(arr, chunks=1):
    return xr.DataArray(da.from_array(arr, chunks=(chunks, -1, -1)), dims=("frame", "y", "x"))


@pytest.fixture(scope="module")
def frames():
    return make_discs(5, 64, 10, seed=1)[0]


@pytest.fixture(scope="module")
def net():
    return tiny_net()


def test_output_dtype_range_and_coords(frames, net):
    v = video(frames, 2).assign_coords(
        frame=np.arange(5), y=np.arange(64) + 0.5, x=np.arange(64) + 0.5
    )
    prob = predict_probability(v, model=net)
    assert prob.dtype == np.float32 and prob.dims == ("frame", "y", "x")
    assert prob.chunks == v.chunks
    p = prob.values
    assert p.min() >= 0 and p.max() <= 1 and np.isfinite(p).all()
    np.testing.assert_array_equal(prob["x"].values, v["x"].values)
    ds = predict_maps(v, model=net)
    assert list(ds.data_vars) == ["probability", "boundary"]
    np.testing.assert_allclose(ds["probability"].values, p, atol=1e-6)


def test_normalisation_makes_any_dtype_give_the_same_probability(frames, net):
    ref = predict_probability(video(frames), model=net).values
    for arr in (
        frames.astype(np.uint16) * 257,
        frames.astype(np.float32) / 255.0,
        frames.astype(np.float64) * 1e6 + 3e7,
        frames.astype(np.int16) - 128,
    ):
        out = predict_probability(video(arr), model=net).values
        np.testing.assert_allclose(out, ref, atol=1e-3)
    assert ref.std() > 0.02  # the network output is not constant


def test_bright_polarity_equals_dark_on_the_negated_video(frames, net):
    dark = predict_probability(video(frames), model=net, polarity="dark").values
    inverted = (255 - frames).astype(np.uint8)
    bright = predict_probability(video(inverted), model=net, polarity="bright").values
    auto = predict_probability(video(inverted), model=net, polarity="auto").values
    np.testing.assert_allclose(bright, dark, atol=1e-5)
    np.testing.assert_allclose(auto, dark, atol=1e-5)
    wrong = predict_probability(video(inverted), model=net, polarity="dark").values
    assert np.abs(wrong - dark).max() > 0.05


def test_tiled_equals_whole_frame_away_from_borders():
    # the tiny network's receptive field has a radius of about 26 px: tiles
    # trusted 32 px from their inner edges agree with the whole-frame pass
    arr = make_discs(2, 192, 10, seed=2)[0]
    net = tiny_net(seed=3)
    whole = predict_probability(video(arr, 2), model=net).values
    tiled = predict_probability(video(arr, 2), model=net, tile_size=128, tile_overlap=96).values
    np.testing.assert_allclose(tiled[:, 8:-8, 8:-8], whole[:, 8:-8, 8:-8], atol=1e-3)
    # control: too small an overlap shows seams, so the comparison can fail
    seams = predict_probability(video(arr, 2), model=net, tile_size=64, tile_overlap=16).values
    assert np.abs(seams - whole).max() > 1e-2


def test_results_do_not_depend_on_chunking_or_batch_size(frames, net):
    ref = predict_probability(video(frames, 5), model=net, batch_size=4).values
    for chunks in [(1, 1, 1, 1, 1), (5,), (2, 3), (3, 1, 1)]:
        v = xr.DataArray(da.from_array(frames, chunks=(chunks, -1, -1)), dims=("frame", "y", "x"))
        out = predict_probability(v, model=net, batch_size=3).values
        np.testing.assert_allclose(out, ref, atol=1e-5)
    # numpy-backed input works too
    out = predict_probability(xr.DataArray(frames, dims=("frame", "y", "x")), model=net).values
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_building_the_graph_computes_nothing(frames, net):
    def fail(*args, **kwargs):
        raise AssertionError("the graph was computed while being built")

    _model_cache.clear_cache()
    card = {"heads": ["probability", "boundary"], "particle_size_px": {"median": 12.0}}
    net.lptem_card = card  # training size known: the size is estimated lazily
    try:
        with dask.config.set(scheduler=fail):
            prob = predict_probability(video(frames, 2), model=net, polarity="auto")
            maps = predict_maps(video(frames, 2), model=net, particle_size_px=20.0)
    finally:
        del net.lptem_card
    assert _model_cache.n_cached() == 0
    assert isinstance(prob.data, da.Array) and isinstance(maps["boundary"].data, da.Array)
    assert prob.shape == frames.shape


def test_rescaling_maps_back_to_the_input_grid(frames, net):
    net.lptem_card = {"heads": ["probability", "boundary"], "particle_size_px": {"median": 12.0}}
    try:
        same = predict_probability(video(frames), model=net, particle_size_px=12.0).values
        half = predict_probability(video(frames), model=net, particle_size_px=24.0)
        auto = predict_probability(video(frames), model=net)
        assert half.shape == frames.shape and auto.shape == frames.shape
        half_v = half.values
    finally:
        del net.lptem_card
    ref = predict_probability(video(frames), model=net).values
    np.testing.assert_allclose(same, ref, atol=1e-6)  # scale 1: no resampling
    assert np.abs(half_v - ref).max() > 1e-3  # rescaled by 1/2 before the network


@pytest.mark.parametrize("diam", [8, 20, 45])
def test_particle_size_estimate_from_autocovariance(diam):
    arr = make_discs(2, 256, diam, cnr=1.0, seed=diam)[0]
    est = estimate_particle_size_px(arr)
    assert est == pytest.approx(diam, rel=0.15)


def test_module_reaches_each_worker_once(frames, net):
    distributed = pytest.importorskip("distributed")
    from lptem_dask.segment._model_cache import n_cached, n_deserialised

    arr = np.concatenate([frames, frames])  # 10 frames in 10 chunks
    expected = predict_probability(video(arr, 1), model=net).values
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        prob = predict_probability(video(arr, 1), model=net)
        out = client.compute(prob.data).result()
        counts = client.run(n_deserialised)
        built = client.run(n_cached)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    # every worker that ran chunks got the model once, not once per task (10 tasks)
    assert all(c <= 1 for c in counts.values()), counts
    assert sum(counts.values()) >= 1
    assert all(b <= 1 for b in built.values()), built


def test_checkpoint_round_trip(tmp_path, frames, net):
    card = {"particle_size_px": {"median": 10.0, "p5": 8.0, "p95": 12.0}}
    path = save_checkpoint(net, card, tmp_path / "m.safetensors")
    from lptem_dask.models import load_model

    module, loaded = load_model(path)
    assert loaded["particle_size_px"]["median"] == 10.0
    assert loaded["heads"] == ["probability", "boundary"]
    for k, v in net.state_dict().items():
        torch.testing.assert_close(module.state_dict()[k], v)
    a = predict_probability(video(frames), model=path, particle_size_px=10.0).values
    b = predict_probability(video(frames), model=tmp_path).values  # directory, size estimated
    c = predict_probability(video(frames), model=net).values
    np.testing.assert_allclose(a, c, atol=1e-6)
    assert b.shape == c.shape
    with pytest.raises(Exception, match="exists"):
        save_checkpoint(net, card, tmp_path / "m.safetensors")


def _evil_payload(target):
    class Evil:
        def __reduce__(self):
            import builtins

            return (builtins.exec, (f"open({str(target)!r}, 'w').write('pwned')",))

    return pickle.dumps({"weight": Evil()})


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_malicious_pickle_checkpoint_is_refused_and_never_runs(tmp_path, net):
    target = tmp_path / "pwned.txt"
    ckpt = tmp_path / "evil.pt"
    ckpt.write_bytes(_evil_payload(target))
    save_checkpoint(net, {}, tmp_path / "good.safetensors")
    (tmp_path / "good.json").rename(tmp_path / "evil.json")  # a valid card beside it
    from lptem_dask.models import load_model

    with pytest.raises(ModelError, match="refused"):
        load_model(ckpt)
    # the same bytes under a .safetensors name are refused too
    (tmp_path / "evil2.safetensors").write_bytes(_evil_payload(target))
    (tmp_path / "evil2.json").write_text((tmp_path / "evil.json").read_text())
    with pytest.raises(ModelError, match="safetensors"):
        load_model(tmp_path / "evil2.safetensors")
    assert not target.exists()
    # control: unpickling the payload naively would have run the code
    pickle.loads(_evil_payload(target))
    assert target.read_text() == "pwned"


def test_missing_or_bad_models_raise_model_error(tmp_path, frames):
    from lptem_dask.models import default_model_paths, load_model

    with pytest.raises(ModelError, match="does not exist"):
        load_model(tmp_path / "nope.safetensors")
    (tmp_path / "x.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelError, match="card"):
        load_model(tmp_path / "x.safetensors")
    if not default_model_paths()[0].exists():
        with pytest.raises(ModelError, match="lptem train configs/train/default.yaml"):
            predict_probability(video(frames), model="default")


def test_bad_arguments_raise_input_error(frames, net):
    with pytest.raises(InputError, match="dims"):
        predict_probability(video(frames).rename(frame="t"), model=net)
    with pytest.raises(InputError, match="polarity"):
        predict_probability(video(frames), model=net, polarity="white")
    with pytest.raises(InputError, match="particle_size_px"):
        predict_probability(video(frames), model=net, particle_size_px=-1)
    with pytest.raises(InputError, match="xarray"):
        predict_probability(frames, model=net)


def test_segment_labels_instances(net):
    pytest.importorskip("lptem_dask.segment.postprocess")
    arr = make_discs(2, 64, 10, seed=5)[0]
    # no confidence or speck filter: the tiny test net is barely above 0.5 anywhere
    labels = segment(video(arr), model=net, min_confidence=0, min_relative_area=0)
    assert labels.dtype == np.int32 and labels.shape == arr.shape
    lab = labels.values
    prob = predict_probability(video(arr), model=net).values
    assert ((lab > 0) == (prob > 0.5)).mean() > 0.95


@pytest.mark.gpu
def test_gpu_matches_cpu_in_half_precision(frames, net):
    if not torch.cuda.is_available():
        pytest.fail("the gpu tests need a CUDA GPU")
    cpu = predict_probability(video(frames), model=net, device="cpu", precision="float32").values
    gpu = predict_probability(video(frames), model=net, device="cuda").values
    np.testing.assert_allclose(gpu, cpu, atol=2e-2)
    gpu32 = predict_probability(video(frames), model=net, device="cuda", precision="float32").values
    np.testing.assert_allclose(gpu32, cpu, atol=1e-3)


def test_lp_segment_is_callable_whatever_was_imported_first(frames, net):
    # this module imported lptem_dask.segment.infer before touching lp.segment,
    # which binds the subpackage to the name; it must still segment
    import lptem_dask as lp
    import lptem_dask.segment as seg_pkg

    assert callable(lp.segment)
    v = video(frames[:2])
    a = np.asarray(lp.segment(v, model=net, particle_size_px=10))
    b = np.asarray(segment(v, model=net, particle_size_px=10))
    np.testing.assert_array_equal(a, b)
    assert seg_pkg.predict_maps is predict_maps


def _lock_kinds() -> list[str]:
    from lptem_dask.segment._model_cache import _CACHE

    return [type(e.lock).__name__ for e in _CACHE.values()]


def test_concurrent_forward_passes_on_a_multithreaded_cpu_worker(frames, net):
    # a CPU worker with 2 threads runs two forward passes at once on one cached
    # module, one torch thread each; the maps must equal the serial ones
    distributed = pytest.importorskip("distributed")

    arr = np.concatenate([frames] * 4)  # 20 frames in 20 chunks
    expected = predict_probability(video(arr, 1), model=net).values
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        out = client.compute(predict_probability(video(arr, 1), model=net).data).result()
        threads = client.run(torch.get_num_threads)
        locks = client.run(_lock_kinds)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert list(threads.values()) == [1]
    assert list(locks.values()) == [["_NoLock"]]


# ------------------------------------------------------ particle size, found by the model
def _sphere_frames(diameter_nm: tuple[float, float], count: tuple[int, int], seed: int):
    """Simulated 384-px frames (1 nm/px) of spheres of the given diameters, CNR 2.5."""
    from lptem_dask.config import config_from_mapping, dump_config
    from lptem_dask.simulate import SimulationConfig, load_simulation_config, simulate_one

    d = dump_config(load_simulation_config("mixed"))
    d["optics"].update(image_size_px=384, pixel_size_nm=1.0)
    d["background"].update(thin_region_probability=0.0)
    d["particles"].update(
        shapes=[{"shape": "sphere", "size_nm": list(diameter_nm), "mfp_nm": 40.0}],
        count=list(count),
        lattice_fraction=0.0,
        single_shape_fraction=1.0,
        ghost_count=0,
    )
    d["target_cnr"] = 2.5
    cfg = config_from_mapping(SimulationConfig, d, source="test")
    sims = [simulate_one(i, cfg, seed=seed) for i in range(2)]
    truth = np.concatenate([s["truth"]["size_nm"].to_numpy() for s in sims])
    return np.stack([s["image"] for s in sims]), float(np.median(truth))


def test_model_finds_one_particle_size_and_rescales_it_to_its_median():
    # one population inside the training range is rescaled as an explicit
    # particle_size_px would be (small particles measured as they were lost D and D_r)
    from lptem_dask.segment.infer import _train_range, estimate_size_with_model, prepare_model

    spec = prepare_model("default")
    lo, med, hi = _train_range(spec.card)
    frames, truth = _sphere_frames((30.0, 40.0), (10, 14), seed=11)
    size, scale = estimate_size_with_model(frames, spec, polarity="dark")
    assert lo <= truth <= hi
    assert size == pytest.approx(truth, rel=0.2)
    assert scale == pytest.approx(med / size)


def test_model_leaves_a_mixture_of_sizes_in_its_range_as_it_is():
    from lptem_dask.segment.infer import (
        _objects_diameters_px,
        _train_range,
        estimate_size_with_model,
        prepare_model,
    )

    spec = prepare_model("default")
    lo, _, hi = _train_range(spec.card)
    frames, _ = _sphere_frames((16.0, 80.0), (14, 18), seed=13)
    d = _objects_diameters_px(frames, spec, "dark", 1.0, None)
    q1, q3 = np.percentile(d, [25, 75])
    assert q3 > 1.5 * q1  # a mixture by the estimate's own rule
    size, scale = estimate_size_with_model(frames, spec, polarity="dark")
    assert lo <= size <= hi
    assert scale == 1.0  # inside the training range: frames as they are


def test_model_finds_large_particles_and_rescales_them_to_its_median():
    from lptem_dask.segment.infer import _train_range, estimate_size_with_model, prepare_model

    spec = prepare_model("default")
    _, med, hi = _train_range(spec.card)
    frames, truth = _sphere_frames((140.0, 160.0), (2, 3), seed=12)
    assert truth > 1.4 * hi
    size, scale = estimate_size_with_model(frames, spec, polarity="dark")
    assert size == pytest.approx(truth, rel=0.25)
    assert scale == pytest.approx(med / size)


def test_default_segment_uses_the_model_estimate(monkeypatch):
    # particle_size_px=None: predict_maps decides the rescaling with the model (not the
    # autocovariance alone, which misjudged noisy mixed frames by 2-10x)
    from lptem_dask.segment import infer

    calls = []
    real = infer.estimate_size_with_model

    def spy(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(infer, "estimate_size_with_model", spy)
    frames, _ = _sphere_frames((30.0, 40.0), (10, 14), seed=11)
    maps = predict_maps(video(frames), model="default").compute(scheduler="synchronous")
    assert calls == [1]
    assert maps["probability"].shape == frames.shape


def test_shipped_rods_model_segments_motion_blurred_rods_better_than_the_default():
    """model="rods" (the default trained further with the rods preset) against the default
    on held-out images of the rods preset (seed 1001, eval_unet.py's shape:rods set)."""
    from lptem_dask.models import SHIPPED_MODELS, load_model, shipped_model_paths
    from lptem_dask.simulate import simulate_one

    if not all(shipped_model_paths(n)[0].exists() for n in SHIPPED_MODELS):
        pytest.skip("the shipped models are not installed")
    with pytest.raises(ModelError, match="rods"):
        shipped_model_paths("spheres")
    _, card = load_model("rods")
    _, default_card = load_model("default")
    stages = card["training_stages"]
    # its card carries the default model's stages, then its own from those weights
    assert stages[-2]["weights_sha256"] == default_card["weights_sha256"]
    assert stages[-1]["weights_sha256"] == card["weights_sha256"]
    assert card["data"]["extra"][0]["simulation"] == "rods"
    sims = [simulate_one(i, "rods", seed=1001) for i in range(4)]
    vid = xr.DataArray(np.stack([s["image"] for s in sims]), dims=("frame", "y", "x"))
    truth = np.stack([s["mask"] for s in sims]).astype(bool)
    iou = {}
    for name in ("default", "rods"):
        p = predict_probability(vid, model=name).values > 0.5
        iou[name] = (p & truth).sum() / (p | truth).sum()
    # measured (n = 16 per model): 0.419 default, 0.616 rods
    assert iou["rods"] > iou["default"] + 0.1, iou


def test_test_time_augmentation_is_the_mean_over_the_eight_symmetries_of_the_square(frames, net):
    from lptem_dask.segment.infer import TTA_TRANSFORMS

    arr = frames[:2]
    got = predict_probability(video(arr), model=net, tta=True).values
    manual = np.zeros_like(got)
    for k, flip in TTA_TRANSFORMS:
        t = np.rot90(arr, k, axes=(1, 2))
        if flip:
            t = t[..., ::-1]
        p = predict_probability(video(np.ascontiguousarray(t)), model=net).values
        if flip:
            p = p[..., ::-1]
        manual += np.rot90(p, -k, axes=(1, 2))
    manual /= len(TTA_TRANSFORMS)
    np.testing.assert_allclose(got, manual, atol=2e-5)
    plain = predict_probability(video(arr), model=net).values
    assert np.abs(got - plain).max() > 1e-3  # a random network is not symmetric
    # frames that are not square, tiled, in ragged chunks: same maps, any chunking
    rect = make_discs(3, 96, 10, seed=4)[0][:, :, :64]
    one = predict_probability(video(rect, 1), model=net, tta=True, tile_size=48).values
    whole = predict_probability(video(rect, 3), model=net, tta=True, tile_size=48).values
    assert one.shape == rect.shape
    np.testing.assert_array_equal(one, whole)
