"""Data sources and augmentation for training the U-Net.

A *source* gives full labelled images by index: ``len(source)`` and
``source[i] -> {"image": (y, x) float, "mask": (y, x) bool, "labels": (y, x)
int32}``. Three are provided:

- :class:`SimulatedSource`: calls the simulator's ``simulate_one(i, config,
  seed=seed)`` on demand (in DataLoader workers when ``num_workers > 0``),
  optionally caching the images in memory;
- :class:`ZarrSource`: reads a training set written by ``write_training_set``
  (``image``, ``mask``, ``labels`` on dims (index, y, x));
- :class:`FolderSource`: a user's labelled frames, ``images/STEM.(png|tif)``
  with ``masks/STEM.(png|tif)`` (non-zero = particle), for fine-tuning.

:class:`AugmentedDataset` (a ``torch.utils.data.Dataset``) turns a source into
training samples: random rescale, random crop, flips and 90-degree rotations,
gamma, a random illumination gradient and extra noise, then the same robust
normalisation as inference. The random draws of sample ``k`` in epoch ``e``
come from ``np.random.default_rng([seed, e, k])``, so a run is reproducible
whatever the number of loader workers.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from ..errors import InputError
from ._normalize import normalize_frame

logger = logging.getLogger(__name__)

__all__ = [
    "SimulatedSource",
    "ZarrSource",
    "FolderSource",
    "ArraySource",
    "AugmentedDataset",
    "boundary_from_labels",
    "distance_from_labels",
    "prepare_eval_item",
]


def boundary_from_labels(labels: np.ndarray) -> np.ndarray:
    """Inner outline of every instance (pixels of an object touching another label or background)."""
    from skimage.segmentation import find_boundaries

    return find_boundaries(labels, mode="inner") & (labels > 0)


def distance_from_labels(labels: np.ndarray, scale_px: float) -> np.ndarray:
    """Distance to the nearest pixel outside the own instance, / ``scale_px``, clipped to [0, 1]."""
    out = np.zeros(labels.shape, np.float32)
    objs = ndimage.find_objects(labels)
    for i, sl in enumerate(objs, start=1):
        if sl is None:
            continue
        sl = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in sl)
        m = labels[sl] == i
        d = ndimage.distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1]
        out[sl][m] = d[m]
    return np.clip(out / max(scale_px, 1e-6), 0.0, 1.0)


class ArraySource:
    """Images held in memory: lists or arrays of image, mask and labels."""

    def __init__(self, images: Any, masks: Any, labels: Any = None) -> None:
        self.images = images
        self.masks = masks
        self.labels = labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        mask = np.asarray(self.masks[i]).astype(bool)
        if self.labels is not None:
            labels = np.asarray(self.labels[i]).astype(np.int32)
        else:
            labels = ndimage.label(mask)[0].astype(np.int32)
        return {"image": np.asarray(self.images[i]), "mask": mask, "labels": labels}


class SimulatedSource:
    """Images ``simulate_one(index, config, seed=seed)`` for ``index`` in ``range(n)``."""

    def __init__(self, config: Any, n: int, *, seed: int, cache: bool = True) -> None:
        from ..simulate import load_simulation_config

        self.config = load_simulation_config(config)
        self.n = int(n)
        self.seed = int(seed)
        self.cache = cache
        self._items: dict[int, dict[str, np.ndarray]] = {}
        self.failures: list[tuple[int, str]] = []

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        if i in self._items:
            return self._items[i]
        from ..simulate import simulate_one

        # a simulator failure on one index is logged and the image replaced by
        # index i + n (then i + 2n, ...), deterministically; failures are counted
        j = int(i)
        for _ in range(5):
            try:
                out = simulate_one(j, self.config, seed=self.seed)
                break
            except Exception as exc:  # noqa: BLE001 - reported, never silent
                logger.warning(
                    "simulate_one(%d, seed=%d) failed (%s); using index %d",
                    j,
                    self.seed,
                    exc,
                    j + self.n,
                )
                self.failures.append((j, f"{type(exc).__name__}: {exc}"))
                j += self.n
        else:
            raise InputError(f"the simulator failed 5 times from index {i} (seed {self.seed})")
        image = out["image"]
        if np.all(image == np.round(image)) and image.max() < 2048 and image.min() > -2048:
            image = image.astype(np.float16)  # exact for the quantised images; halves memory
        item = {
            "image": image,
            "mask": np.asarray(out["mask"], bool),
            "labels": np.asarray(out["labels"], np.int32),
        }
        if self.cache:
            self._items[i] = item
        return item


class ZarrSource:
    """A training set written by ``lptem_dask.simulate.write_training_set``."""

    def __init__(self, path: str | Path) -> None:
        import xarray as xr

        p = Path(path)
        if not p.exists():
            raise InputError(
                f"training set {str(p)!r} does not exist; write it with `lptem simulate`"
            )
        self.ds = xr.open_zarr(p, consolidated=False)
        for var in ("image", "mask"):
            if var not in self.ds:
                raise InputError(f"training set {str(p)!r} has no variable `{var}`")
        self.n = int(self.ds.sizes["index"])

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        mask = np.asarray(self.ds["mask"][i].values, bool)
        if "labels" in self.ds:
            labels = np.asarray(self.ds["labels"][i].values, np.int32)
        else:
            labels = ndimage.label(mask)[0].astype(np.int32)
        return {"image": np.asarray(self.ds["image"][i].values), "mask": mask, "labels": labels}


_IMAGE_SUFFIXES = (".png", ".tif", ".tiff")


def _read_image(path: Path) -> np.ndarray:
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        arr = tifffile.imread(path)
    else:
        import imageio.v3 as iio

        arr = iio.imread(path)
    arr = np.asarray(arr)
    if arr.ndim == 3:  # RGB(A) -> grey
        arr = arr[..., :3].mean(axis=-1) if arr.shape[-1] in (3, 4) else arr[0]
    if arr.ndim != 2:
        raise InputError(f"{str(path)!r} is not a 2-D image (shape {arr.shape})")
    return arr


class FolderSource:
    """Labelled frames of a user: ``images/STEM.ext`` + ``masks/STEM.ext`` (ext png/tif)."""

    def __init__(self, folder: str | Path) -> None:
        root = Path(folder)
        img_dir, mask_dir = root / "images", root / "masks"
        if not img_dir.is_dir() or not mask_dir.is_dir():
            raise InputError(
                f"fine-tuning folder {str(root)!r} must contain `images/` and `masks/` with "
                "files of matching stems (png or tif); found "
                f"{sorted(p.name for p in root.iterdir()) if root.is_dir() else 'no folder'}"
            )
        imgs = {p.stem: p for p in img_dir.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES}
        masks = {p.stem: p for p in mask_dir.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES}
        stems = sorted(set(imgs) & set(masks))
        missing = sorted(set(imgs) ^ set(masks))
        if not stems:
            raise InputError(
                f"no image/mask pairs with matching stems in {str(root)!r} "
                f"(images: {len(imgs)}, masks: {len(masks)})"
            )
        if missing:
            raise InputError(
                f"in {str(root)!r} these stems have an image or a mask but not both: "
                f"{missing[:10]}; every image needs masks/STEM.png or .tif"
            )
        self.items: list[dict[str, np.ndarray]] = []
        self.stems = stems
        for s in stems:
            image = _read_image(imgs[s])
            mask = _read_image(masks[s]) > 0
            if image.shape != mask.shape:
                raise InputError(
                    f"image {imgs[s].name} has shape {image.shape} but its mask {mask.shape}"
                )
            labels = ndimage.label(mask)[0].astype(np.int32)
            self.items.append({"image": image, "mask": mask, "labels": labels})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return self.items[i]


class ConcatSource:
    """The images of several sources one after the other (e.g. two simulator presets)."""

    def __init__(self, sources: list[Any]) -> None:
        self.sources = list(sources)
        self._ends = np.cumsum([len(s) for s in self.sources])

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} images")
        k = int(np.searchsorted(self._ends, i, side="right"))
        start = int(self._ends[k - 1]) if k else 0
        return self.sources[k][i - start]

    @property
    def failures(self) -> list[tuple[int, str]]:
        return [f for s in self.sources for f in getattr(s, "failures", [])]


class _Subset:
    def __init__(self, source: Any, index: list[int]) -> None:
        self.source, self.index = source, index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return self.source[self.index[i]]


def _resize_item(item: dict[str, np.ndarray], factor: float) -> dict[str, np.ndarray]:
    import torch.nn.functional as F

    img = item["image"].astype(np.float32)
    h, w = img.shape
    nh, nw = max(8, round(h * factor)), max(8, round(w * factor))
    t = torch.from_numpy(img)[None, None]
    img2 = F.interpolate(
        t, size=(nh, nw), mode="bilinear", align_corners=False, antialias=factor < 1
    ).numpy()[0, 0]
    yi = np.minimum(((np.arange(nh) + 0.5) * h / nh).astype(int), h - 1)
    xi = np.minimum(((np.arange(nw) + 0.5) * w / nw).astype(int), w - 1)
    labels = item["labels"][np.ix_(yi, xi)]
    mask = item["mask"][np.ix_(yi, xi)]
    return {"image": img2, "mask": mask, "labels": labels}


def _targets(item: dict[str, np.ndarray], heads: tuple[str, ...], dist_scale_px: float):
    out = []
    for h in heads:
        if h == "probability":
            out.append(item["mask"].astype(np.float32))
        elif h == "boundary":
            out.append(boundary_from_labels(item["labels"]).astype(np.float32))
        elif h == "distance":
            out.append(distance_from_labels(item["labels"], dist_scale_px))
    return np.stack(out)


def prepare_eval_item(
    item: dict[str, np.ndarray], heads: tuple[str, ...], multiple: int, dist_scale_px: float = 10.0
):
    """Whole image normalised and padded to ``multiple`` + its targets (for validation)."""
    from ._tiling import pad_to_multiple

    x = normalize_frame(item["image"], polarity="dark")
    h, w = x.shape
    xp = pad_to_multiple(x, multiple)
    return xp, _targets(item, heads, dist_scale_px), (h, w)


class AugmentedDataset(torch.utils.data.Dataset):
    """Random augmented crops of a source (see module docstring)."""

    def __init__(
        self,
        source: Any,
        *,
        heads: tuple[str, ...],
        crop_px: int,
        samples_per_epoch: int,
        seed: int,
        scale_range: tuple[float, float] = (1.0, 1.0),
        flips: bool = True,
        gamma_range: tuple[float, float] = (1.0, 1.0),
        noise_max: float = 0.0,
        gradient_max: float = 0.0,
        dist_scale_px: float = 10.0,
    ) -> None:
        self.source = source
        self.heads = tuple(heads)
        self.crop = int(crop_px)
        self.samples = int(samples_per_epoch)
        self.seed = int(seed)
        self.scale_range = scale_range
        self.flips = flips
        self.gamma_range = gamma_range
        self.noise_max = noise_max
        self.gradient_max = gradient_max
        self.dist_scale_px = dist_scale_px
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.samples

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, int(k)])
        item = self.source[int(rng.integers(len(self.source)))]
        lo, hi = self.scale_range
        if hi > lo or lo != 1.0:
            f = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
            if abs(f - 1.0) > 1e-3:
                item = _resize_item(item, f)
        img = item["image"].astype(np.float32)
        h, w = img.shape
        c = self.crop
        if h < c or w < c:
            py, px = max(0, c - h), max(0, c - w)
            img = np.pad(img, ((0, py), (0, px)), mode="reflect")
            item = {
                "mask": np.pad(item["mask"], ((0, py), (0, px))),
                "labels": np.pad(item["labels"], ((0, py), (0, px))),
            }
            h, w = img.shape
        y0 = int(rng.integers(0, h - c + 1))
        x0 = int(rng.integers(0, w - c + 1))
        sl = (slice(y0, y0 + c), slice(x0, x0 + c))
        img = img[sl]
        crop = {"mask": item["mask"][sl], "labels": item["labels"][sl]}
        # intensity augmentation on the raw image (before normalisation, which
        # undoes any affine change): gamma, illumination gradient, extra noise
        g0, g1 = self.gamma_range
        if g1 > g0:
            lo_v, hi_v = float(img.min()), float(img.max())
            if hi_v > lo_v:
                u = (img - lo_v) / (hi_v - lo_v)
                img = u ** float(np.exp(rng.uniform(np.log(g0), np.log(g1))))
        p1, p50, p99 = np.percentile(img, [1, 50, 99])
        span = max(p99 - p1, 1e-6)
        if self.gradient_max > 0:
            a = rng.uniform(0, self.gradient_max) * span
            ang = rng.uniform(0, 2 * np.pi)
            yy, xx = np.mgrid[:c, :c] / c - 0.5
            img = img + a * (np.cos(ang) * yy + np.sin(ang) * xx)
        if self.noise_max > 0:
            mad = 1.4826 * np.median(np.abs(img - p50))
            img = img + rng.normal(0, rng.uniform(0, self.noise_max) * max(mad, 1e-6), img.shape)
        x = normalize_frame(img, polarity="dark")
        y = _targets(crop, self.heads, self.dist_scale_px)
        if self.flips:
            k_rot = int(rng.integers(4))
            x = np.rot90(x, k_rot)
            y = np.rot90(y, k_rot, axes=(1, 2))
            if rng.random() < 0.5:
                x = x[:, ::-1]
                y = y[:, :, ::-1]
        return (
            torch.from_numpy(np.ascontiguousarray(x)[None]),
            torch.from_numpy(np.ascontiguousarray(y)),
        )
