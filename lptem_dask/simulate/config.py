"""Configuration of the LPTEM image simulator, and the named CNR levels.

A :class:`SimulationConfig` has three parts: :class:`OpticsConfig` (dose,
windows, liquid, detector), :class:`BackgroundConfig` (smooth liquid-thickness
field, illumination gradient, contamination specks) and
:class:`ParticlesConfig` (shapes, counts, layout, motion blur, ghosts).

Any numeric field typed ``Range`` accepts either a number (fixed) or a pair
``[low, high]``; a pair is sampled once per image (uniformly, except
``pixel_size_nm`` and ``target_cnr``, which are log-uniform). Integer ranges
(``count``, ``specks``, ``ghost_count``) are sampled uniformly, both ends
included.

Presets ("prisms", "rods", "cubes", "spheres", "mixed") ship inside the
package (``lptem_dask/simulate/presets/*.yaml``) and are identical to the
repository's ``configs/simulate/*.yaml``. The named difficulty levels live in
``cnr_levels.yaml`` beside them; load them with :func:`cnr_levels`.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import Field, model_validator

from ..config import StageConfig, config_from_mapping, load_config
from ..errors import ConfigError

__all__ = [
    "Range",
    "IntRange",
    "OpticsConfig",
    "BackgroundConfig",
    "ShapeConfig",
    "ParticlesConfig",
    "SimulationConfig",
    "PRESET_NAMES",
    "PRESETS_DIR",
    "load_simulation_config",
    "cnr_levels",
    "cnr_level",
]

Range = float | tuple[float, float]
IntRange = int | tuple[int, int]

PRESETS_DIR = Path(__file__).parent / "presets"
PRESET_NAMES = ("prisms", "rods", "cubes", "spheres", "mixed")


def _check_range(value, name: str, *, low: float | None = None) -> None:
    vals = value if isinstance(value, tuple) else (value,)
    if isinstance(value, tuple) and value[0] > value[1]:
        raise ValueError(f"`{name}` range must be [low, high] with low <= high, got {list(value)}")
    if low is not None and any(v < low for v in vals):
        raise ValueError(f"`{name}` must be >= {low}, got {value}")


class OpticsConfig(StageConfig):
    """Dose, windows, liquid and detector.

    Electrons per pixel per frame before attenuation are
    ``dose_rate_e_per_A2_s * 100 * pixel_size_nm**2 * exposure_s``.
    """

    image_size_px: int = Field(default=512, ge=8, le=8192, description="square canvas side, px")
    pixel_size_nm: Range = Field(default=2.09, description="nm per pixel (pair: log-uniform)")
    dose_rate_e_per_A2_s: float = Field(default=100.0, gt=0)
    exposure_s: float = Field(default=0.1, gt=0)
    sin_thickness_nm: float = Field(default=50.0, ge=0, description="each of the two SiN windows")
    sin_mfp_nm: float = Field(default=144.0, gt=0)
    liquid_thickness_nm: Range = Field(default=100.0, description="mean liquid thickness")
    liquid_mfp_nm: float = Field(default=185.0, gt=0)
    gain_counts_per_e: float = Field(default=3.47, gt=0)
    shot_noise: bool = Field(default=True, description="Poisson noise; False: the mean image")
    read_noise_e: Range = Field(default=0.0, description="Gaussian read noise std, electrons")
    mtf: Literal["none", "parametric", "camera512", "camera1024", "rods", "table"] = "parametric"
    mtf_cutoff_cycles_per_px: Range = Field(
        default=0.25, description="parametric MTF 1/(1+(f/fc)^2), zero beyond Nyquist"
    )
    mtf_table_freq: tuple[float, ...] = Field(default=(), description="cycles/px, for mtf='table'")
    mtf_table_values: tuple[float, ...] = ()
    correlated_noise_rel: Range = Field(
        default=0.0, description="std of Gaussian-correlated noise relative to the shot-noise std"
    )
    correlated_noise_length_px: float = Field(default=2.0, gt=0)
    defocus_radius_px: Range = Field(default=0.0, description="disk blur of every particle, px")
    fresnel_fringe: Range = Field(
        default=0.0, description="edge fringe strength (phase contrast of defocus); 0 = none"
    )
    fresnel_sigma_px: float = Field(default=2.0, gt=0)
    supersample: int = Field(default=1, ge=1, le=4, description="sub-samples per pixel side")
    drift_rel: float = Field(default=0.0, ge=0, description="frame-to-frame intensity drift std")
    quantisation: Literal["none", "uint8", "uint16"] = "none"
    offset_counts: float = Field(default=0.0, description="added before uint16 quantisation")

    @model_validator(mode="after")
    def _check(self):
        for name in ("pixel_size_nm", "liquid_thickness_nm", "mtf_cutoff_cycles_per_px"):
            _check_range(getattr(self, name), name, low=1e-9)
        for name in ("read_noise_e", "correlated_noise_rel", "defocus_radius_px", "fresnel_fringe"):
            _check_range(getattr(self, name), name, low=0.0)
        if self.mtf == "table":
            f, v = self.mtf_table_freq, self.mtf_table_values
            if len(f) < 2 or len(f) != len(v):
                raise ValueError(
                    "mtf='table' needs `mtf_table_freq` and `mtf_table_values` of equal length >= 2"
                )
            if any(np.diff(f) <= 0):
                raise ValueError("`mtf_table_freq` must increase strictly")
        return self


class BackgroundConfig(StageConfig):
    """Low-frequency structure of the background."""

    liquid_variation_nm: Range = Field(default=0.0, description="std of the smooth liquid field")
    liquid_correlation_px: Range = Field(default=64.0, description="Gaussian correlation length")
    illumination_gradient: Range = Field(
        default=0.0, description="relative intensity change across the field (plane)"
    )
    specks: IntRange = Field(default=0, description="contamination specks per image")
    speck_radius_px: Range = (1.0, 3.0)
    speck_thickness_nm: Range = (2.0, 8.0)
    speck_mfp_nm: float = Field(default=100.0, gt=0)
    thin_region_probability: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="probability an image has thin-liquid regions (dewetting, bubbles)",
    )
    thin_region_fraction: Range = Field(
        default=(0.1, 0.5), description="fraction of the field the thin regions cover"
    )
    thin_region_depth: Range = Field(
        default=(0.3, 0.9), description="fraction of the liquid thickness missing there"
    )
    thin_region_scale_px: Range = Field(
        default=(60.0, 250.0), description="correlation length of the regions' outline, px"
    )
    thin_region_edge_px: Range = Field(default=(2.0, 15.0), description="width of their edge, px")

    @model_validator(mode="after")
    def _check(self):
        for name in (
            "thin_region_fraction",
            "thin_region_depth",
            "thin_region_edge_px",
            "liquid_variation_nm",
            "illumination_gradient",
            "specks",
            "speck_radius_px",
            "speck_thickness_nm",
        ):
            _check_range(getattr(self, name), name, low=0.0)
        _check_range(self.liquid_correlation_px, "liquid_correlation_px", low=1.0)
        _check_range(self.thin_region_scale_px, "thin_region_scale_px", low=1.0)
        for name in ("thin_region_fraction", "thin_region_depth"):
            v = getattr(self, name)
            if max(v if isinstance(v, tuple) else (v,)) > 1.0:
                raise ValueError(f"`background.{name}` must lie in [0, 1], got {v}")
        return self


class ShapeConfig(StageConfig):
    """One particle species.

    ``size_nm`` is the prism edge, the rod's tip-to-tip length, the cube edge,
    the sphere diameter, or the ellipsoid's length (its width is ``diameter_nm``:
    a prolate spheroid lying flat, with an elliptical outline).
    """

    shape: Literal["prism", "rod", "cube", "sphere", "ellipsoid"]
    weight: float = Field(default=1.0, gt=0)
    size_nm: Range = 100.5
    size_dispersity: float = Field(default=0.1, ge=0, le=0.5, description="relative std")
    thickness_nm: Range = Field(default=7.5, description="prism plate thickness")
    diameter_nm: Range = Field(default=15.0, description="rod diameter, ellipsoid width")
    truncation: Range = Field(default=0.0, description="prism corner truncation fraction")
    recess_depth: float = Field(default=0.15, ge=0, lt=0.5, description="cube, fraction of L")
    mfp_nm: Range = Field(default=85.0, description="inelastic mean free path (per image)")
    etch_amplitude: Range = Field(default=0.0, description="rod radius modulation, relative")

    @model_validator(mode="after")
    def _check(self):
        for name in ("size_nm", "thickness_nm", "diameter_nm", "mfp_nm"):
            _check_range(getattr(self, name), name, low=1e-6)
        _check_range(self.truncation, "truncation", low=0.0)
        _check_range(self.etch_amplitude, "etch_amplitude", low=0.0)
        t = self.truncation if isinstance(self.truncation, tuple) else (self.truncation,)
        if max(t) >= 0.5:
            raise ValueError(f"`truncation` must be < 0.5, got {self.truncation}")
        return self


def _default_shapes() -> tuple[ShapeConfig, ...]:
    return (ShapeConfig(shape="prism"),)


class ParticlesConfig(StageConfig):
    """What is in the field, where, and how it moves during the exposure."""

    shapes: tuple[ShapeConfig, ...] = Field(default_factory=_default_shapes, min_length=1)
    count: IntRange = Field(default=20, description="labelled particles per image (random layout)")
    single_shape_fraction: float = Field(
        default=0.0, ge=0, le=1, description="probability an image holds one species only"
    )
    border_padding: float = Field(
        default=0.05, ge=0, le=0.5, description="centres may lie this fraction outside the field"
    )
    lattice_fraction: float = Field(
        default=0.0, ge=0, le=1, description="probability an image uses a hexagonal lattice"
    )
    lattice_gap: Range = Field(default=(0.2, 1.5), description="lattice gap / particle size")
    lattice_vacancy: float = Field(default=0.1, ge=0, lt=1)
    max_count: int = Field(
        default=150, ge=1, description="a lattice with more sites keeps a domain of this many"
    )
    diffusion_nm2_s: Range = Field(default=20.0, description="Brownian D during the exposure")
    motion_substeps: int = Field(default=200, ge=1, le=10000)
    particle_defocus_px: Range = Field(default=0.0, description="extra disk blur, labelled")
    ghost_count: IntRange = Field(default=0, description="unlabelled blurred/fast particles")
    ghost_blur_px: Range = (5.0, 20.0)
    ghost_diffusion_nm2_s: Range = Field(default=0.0, description="D of ghosts during exposure")
    min_gap_px: float | None = Field(
        default=0.0,
        ge=0,
        description=(
            "random layouts: smallest gap between two labelled particles' projections, px "
            "(0: they may touch, never overlap; null: overlaps allowed, as in a thick liquid "
            "layer)"
        ),
    )
    placement_tries: int = Field(
        default=30, ge=1, le=1000, description="positions tried per particle before it is dropped"
    )

    @model_validator(mode="after")
    def _check(self):
        for name in (
            "count",
            "lattice_gap",
            "diffusion_nm2_s",
            "particle_defocus_px",
            "ghost_count",
            "ghost_blur_px",
            "ghost_diffusion_nm2_s",
        ):
            _check_range(getattr(self, name), name, low=0.0)
        return self


class SimulationConfig(StageConfig):
    """Everything the LPTEM image simulator needs.

    ``target_cnr``: None keeps the physical dose; a number (or a ``[low, high]``
    pair, sampled log-uniformly per image) makes the simulator choose the dose
    so that the expected per-pixel CNR of the labelled particles on the final
    image, ``(background mean - particle mean) / background std``, equals it.
    """

    optics: OpticsConfig = Field(default_factory=OpticsConfig)
    background: BackgroundConfig = Field(default_factory=BackgroundConfig)
    particles: ParticlesConfig = Field(default_factory=ParticlesConfig)
    target_cnr: Range | None = None
    cnr_margin_px: int = Field(
        default=2, ge=0, le=20, description="background excludes this ring around the mask"
    )

    @model_validator(mode="after")
    def _check(self):
        if self.target_cnr is not None:
            _check_range(self.target_cnr, "target_cnr", low=1e-6)
        return self


def load_simulation_config(path_or_name: str | Path | SimulationConfig | None) -> SimulationConfig:
    """Load a simulator configuration from a YAML file or a preset name.

    Parameters
    ----------
    path_or_name : str, Path, SimulationConfig or None
        A preset name (``"prisms"``, ``"rods"``, ``"cubes"``, ``"spheres"``,
        ``"mixed"``), a YAML path, an existing config (returned as is) or None
        (the defaults: the seed method's GUI defaults, prisms).

    Returns
    -------
    SimulationConfig

    Raises
    ------
    ConfigError
        Unknown name, missing file, unknown keys or bad values.
    """
    if path_or_name is None:
        return SimulationConfig()
    if isinstance(path_or_name, SimulationConfig):
        return path_or_name
    s = str(path_or_name)
    if s in PRESET_NAMES:
        return load_config(PRESETS_DIR / f"{s}.yaml", SimulationConfig)
    p = Path(s)
    if p.suffix.lower() in (".yaml", ".yml") or p.exists():
        return load_config(p, SimulationConfig)
    raise ConfigError(
        f"`config` must be a preset name ({', '.join(PRESET_NAMES)}) or a YAML path, "
        f"got {s!r}; pass e.g. 'mixed' or configs/simulate/prisms.yaml"
    )


@functools.lru_cache(maxsize=1)
def _cnr_levels() -> dict[str, float]:
    path = PRESETS_DIR / "cnr_levels.yaml"
    data = yaml.safe_load(path.read_text())
    levels = data.get("levels") if isinstance(data, dict) else None
    if not isinstance(levels, dict) or not levels:
        raise ConfigError(f"{str(path)!r} must hold a mapping `levels: {{name: cnr}}`")
    return {str(k): float(v) for k, v in levels.items()}


def cnr_levels() -> dict[str, float]:
    """The named difficulty levels (name -> per-pixel CNR), hardest last.

    The single source of truth is ``cnr_levels.yaml`` (package presets, equal
    to ``configs/simulate/cnr_levels.yaml``); every accuracy target of the
    project refers to these names.

    Examples
    --------
    >>> cnr_levels()["seed_default"]
    1.7
    """
    return dict(_cnr_levels())


def cnr_level(name: str) -> float:
    """The CNR of one named level; raises ConfigError for an unknown name."""
    levels = _cnr_levels()
    if name not in levels:
        raise ConfigError(f"unknown CNR level {name!r}; known levels: {', '.join(levels)}")
    return levels[name]


def _config_from_dict(data: dict) -> SimulationConfig:  # used by calibration
    return config_from_mapping(SimulationConfig, data, source="<calibration>")
