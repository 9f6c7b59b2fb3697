"""Simulation of LPTEM images and videos with exact ground truth.

Public API: configuration (:class:`SimulationConfig`, :func:`load_simulation_config`,
:func:`cnr_levels`), the numpy kernels (:func:`simulate_one`, :func:`render_frame`),
the lazy Dask-mapped dataset (:func:`simulate_images`, :func:`simulate_truth`,
:func:`write_training_set`), optics helpers (:func:`mtf_from_noise`,
:func:`measure_cnr`, :func:`measure_snr`) and calibration to real frames
(:func:`calibrate_to`).
"""

from .assembly import simulate_assembly, simulate_assembly_video
from .calibrate import CalibrationResult, calibrate_to, residual_nps
from .config import (
    PRESET_NAMES,
    BackgroundConfig,
    OpticsConfig,
    ParticlesConfig,
    ShapeConfig,
    SimulationConfig,
    cnr_level,
    cnr_levels,
    load_simulation_config,
)
from .dataset import simulate_images, simulate_truth, write_training_set
from .dynamics import simulate_trajectories, simulate_video
from .etching import simulate_etching, simulate_etching_video
from .optics import (
    MTF_TABLES,
    brownian_path,
    electrons_per_pixel,
    measure_cnr,
    measure_snr,
    mtf_2d,
    mtf_from_noise,
    mtf_radial,
    noise_power_spectrum,
)
from .scene import (
    TRUTH_COLUMNS,
    boundary_band,
    make_background,
    render_frame,
    sample_image_params,
    sample_particles,
    simulate_one,
)
from .shapes import (
    cube_thickness,
    prism_thickness,
    rod_thickness,
    sphere_thickness,
    thickness,
)

__all__ = [
    "simulate_assembly",
    "simulate_assembly_video",
    "simulate_etching",
    "simulate_etching_video",
    "simulate_trajectories",
    "simulate_video",
    "CalibrationResult",
    "calibrate_to",
    "residual_nps",
    "simulate_images",
    "simulate_truth",
    "write_training_set",
    "PRESET_NAMES",
    "BackgroundConfig",
    "OpticsConfig",
    "ParticlesConfig",
    "ShapeConfig",
    "SimulationConfig",
    "cnr_level",
    "cnr_levels",
    "load_simulation_config",
    "MTF_TABLES",
    "brownian_path",
    "electrons_per_pixel",
    "measure_cnr",
    "measure_snr",
    "mtf_2d",
    "mtf_from_noise",
    "mtf_radial",
    "noise_power_spectrum",
    "TRUTH_COLUMNS",
    "boundary_band",
    "make_background",
    "render_frame",
    "sample_image_params",
    "sample_particles",
    "simulate_one",
    "cube_thickness",
    "prism_thickness",
    "rod_thickness",
    "sphere_thickness",
    "thickness",
]
