"""Projected thickness maps of nanoparticles: exact chord lengths along the beam.

Each function takes pixel offsets from the particle centre, ``dy`` (rows, down)
and ``dx`` (columns, right), as broadcastable float arrays in pixels, and
returns the chord length t(x, y) in nm of the beam (along z) through the 3-D
solid. Orientation ``orientation_deg`` is the angle of the particle's reference
axis counter-clockwise from +x *as seen on screen* (rows pointing down): the
axis points along (dx, dy) = (cos θ, -sin θ). Reference axes: a prism's
centroid-to-vertex direction, a rod's long axis, a cube's face normal.

All particles lie flat in the image plane (rods' axes and prisms' plates
perpendicular to the beam; cubes face-on).

References
----------
Yao, L. et al. ACS Cent. Sci. 6, 1421 (2020), simulator chenlabUIUC/simulatedLPTEM.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "sphere_thickness",
    "prism_thickness",
    "rod_thickness",
    "cube_thickness",
    "thickness",
    "bounding_radius_nm",
    "spherocylinder_profile",
    "ellipsoid_thickness",
]

_SQRT3 = np.sqrt(3.0)


def _axes(dy, dx, orientation_deg: float, pixel_size_nm: float):
    """Rotate pixel offsets into (u along the axis, v across it), in nm."""
    th = np.deg2rad(orientation_deg)
    c, s = np.cos(th), np.sin(th)
    u = (dx * c - dy * s) * pixel_size_nm
    v = (dx * s + dy * c) * pixel_size_nm
    return u, v


def sphere_thickness(dy, dx, *, diameter_nm: float, pixel_size_nm: float) -> np.ndarray:
    """Chord of a sphere: ``2 sqrt(R^2 - r^2)`` nm inside radius R, else 0."""
    r2 = (dy * dy + dx * dx) * pixel_size_nm**2
    R = 0.5 * diameter_nm
    return 2.0 * np.sqrt(np.maximum(R * R - r2, 0.0))


def ellipsoid_thickness(
    dy,
    dx,
    *,
    length_nm: float,
    width_nm: float,
    orientation_deg: float = 0.0,
    pixel_size_nm: float,
) -> np.ndarray:
    """Chord of a prolate spheroid lying flat, nm.

    Semi-axes ``a = length/2`` along ``orientation_deg`` and ``b = width/2`` across
    it and out of the plane: ``2 b sqrt(1 - (u/a)^2 - (v/b)^2)``. Its projected
    outline is an ellipse, whose curvature is known in closed form (tests of the
    contour curvature on segmented frames).
    """
    u, v = _axes(dy, dx, orientation_deg, pixel_size_nm)
    a, b = 0.5 * length_nm, 0.5 * width_nm
    q = 1.0 - (u / a) ** 2 - (v / b) ** 2
    return 2.0 * b * np.sqrt(np.maximum(q, 0.0))


def prism_thickness(
    dy,
    dx,
    *,
    edge_nm: float,
    thickness_nm: float,
    orientation_deg: float = 0.0,
    truncation: float = 0.0,
    pixel_size_nm: float,
) -> np.ndarray:
    """Triangular plate (equilateral, edge ``edge_nm``) of uniform thickness.

    ``truncation`` cuts each corner perpendicular to the centroid-vertex line
    at ``(1 - truncation)`` of the centroid-vertex distance ``L/sqrt(3)``;
    each cut removes an equilateral corner of edge ``2 truncation L / 3``.
    Projected area: ``sqrt(3)/4 L^2 - 3 sqrt(3)/4 (2 truncation L/3)^2``.
    """
    u, v = _axes(dy, dx, orientation_deg, pixel_size_nm)
    r_in = edge_nm / (2.0 * _SQRT3)
    r_vert = edge_nm / _SQRT3 * (1.0 - truncation)
    inside = np.ones(np.broadcast(u, v).shape, dtype=bool)
    for k in range(3):
        a = np.deg2rad(120.0 * k)
        ca, sa = np.cos(a), np.sin(a)
        pv = u * ca + v * sa  # along vertex k
        inside &= -pv <= r_in  # edge opposite vertex k has outward normal -vertex_k
        if truncation > 0:
            inside &= pv <= r_vert
    return np.where(inside, float(thickness_nm), 0.0)


def spherocylinder_profile(length_nm: float, diameter_nm: float, n: int = 129):
    """Radius along the axis of a spherocylinder: (s_nm, radius_nm), s in [-L/2, L/2]."""
    R = 0.5 * diameter_nm
    a = max(0.5 * length_nm - R, 0.0)
    s = np.linspace(-0.5 * length_nm, 0.5 * length_nm, n)
    e = np.maximum(np.abs(s) - a, 0.0)
    return s, np.sqrt(np.maximum(R * R - e * e, 0.0))


def rod_thickness(
    dy,
    dx,
    *,
    length_nm: float,
    diameter_nm: float,
    orientation_deg: float = 0.0,
    radius_profile_nm: np.ndarray | None = None,
    pixel_size_nm: float,
) -> np.ndarray:
    """Rod lying in the image plane: spherocylinder, or a body of revolution.

    Without ``radius_profile_nm`` the rod is a spherocylinder of tip-to-tip
    length ``length_nm`` and diameter ``diameter_nm``: chord
    ``2 sqrt(R^2 - v^2 - e^2)`` with ``e = max(|u| - (L/2 - R), 0)``. With a
    profile (radii in nm sampled uniformly from tip to tip), the rod is the
    body of revolution of that profile: chord ``2 sqrt(R(u)^2 - v^2)``, exact
    for an axis perpendicular to the beam.
    """
    u, v = _axes(dy, dx, orientation_deg, pixel_size_nm)
    if radius_profile_nm is None:
        R = 0.5 * diameter_nm
        a = max(0.5 * length_nm - R, 0.0)
        e = np.maximum(np.abs(u) - a, 0.0)
        return 2.0 * np.sqrt(np.maximum(R * R - v * v - e * e, 0.0))
    prof = np.asarray(radius_profile_nm, dtype=np.float64)
    s = np.linspace(-0.5 * length_nm, 0.5 * length_nm, prof.size)
    Ru = np.interp(u, s, prof, left=0.0, right=0.0)
    return 2.0 * np.sqrt(np.maximum(Ru * Ru - v * v, 0.0))


def cube_thickness(
    dy,
    dx,
    *,
    edge_nm: float,
    orientation_deg: float = 0.0,
    recess_depth: float = 0.15,
    pixel_size_nm: float,
) -> np.ndarray:
    """Concave cube seen face-on: every face recessed by an inverted square pyramid.

    Each pyramid has the face as its base and its apex ``recess_depth * L``
    below the face centre (0.15 L: apex 0.35 L from the cube's centre). The
    top/bottom recesses bound the solid at ``|z| <= h - d + d m / h`` (h = L/2,
    d = recess_depth L, m = max(|u|, |v|)); the side face at ``u = +h``
    removes ``max(|v|, |z|) < w_u = h (|u| - h + d) / d``, a slab of half
    width ``w_u`` around z = 0 where ``|v| < w_u``. The chord is
    ``2 (z_top - max(w_u, w_v))`` with only the applicable side recesses:
    0.70 L at the centre, L at the corners (for d = 0.15 L).
    """
    u, v = _axes(dy, dx, orientation_deg, pixel_size_nm)
    h = 0.5 * edge_nm
    a, b = np.abs(u), np.abs(v)
    inside = (a <= h) & (b <= h)
    if recess_depth <= 0:
        return np.where(inside, float(edge_nm), 0.0)
    d = recess_depth * edge_nm
    m = np.maximum(a, b)
    z_top = h - d + d * m / h
    wu = h * (a - h + d) / d
    wv = h * (b - h + d) / d
    W = np.maximum(np.where((wu > 0) & (b < wu), wu, 0.0), np.where((wv > 0) & (a < wv), wv, 0.0))
    return np.where(inside, np.maximum(2.0 * (z_top - W), 0.0), 0.0)


def bounding_radius_nm(shape: str, size_nm: float, diameter_nm: float = 0.0) -> float:
    """Radius of a circle around the centre that holds the whole projection, nm."""
    if shape == "sphere":
        return 0.5 * size_nm
    if shape == "prism":
        return size_nm / _SQRT3
    if shape == "cube":
        return 0.5 * size_nm * np.sqrt(2.0)
    if shape in ("rod", "ellipsoid"):
        return 0.5 * max(size_nm, diameter_nm)
    raise ValueError(f"unknown shape {shape!r}; expected prism, rod, cube, sphere or ellipsoid")


def thickness(dy, dx, particle, *, pixel_size_nm: float) -> np.ndarray:
    """Thickness map of one particle described by a mapping (a truth-table row).

    Keys: ``shape``, ``size_nm``, ``orientation_deg`` and, by shape,
    ``thickness_nm`` and ``truncation`` (prism), ``diameter_nm`` and optional
    ``radius_profile_nm`` (rod), ``recess_depth`` (cube), ``diameter_nm`` (the
    ellipsoid's width; ``size_nm`` is its length).
    """
    shape = particle["shape"]
    size = float(particle["size_nm"])
    th = float(particle.get("orientation_deg", 0.0))
    if shape == "sphere":
        return sphere_thickness(dy, dx, diameter_nm=size, pixel_size_nm=pixel_size_nm)
    if shape == "prism":
        return prism_thickness(
            dy,
            dx,
            edge_nm=size,
            thickness_nm=float(particle.get("thickness_nm", 7.5)),
            orientation_deg=th,
            truncation=float(_nan0(particle.get("truncation", 0.0))),
            pixel_size_nm=pixel_size_nm,
        )
    if shape == "rod":
        prof = particle.get("radius_profile_nm", None)
        if prof is not None and not isinstance(prof, np.ndarray) and not isinstance(prof, list):
            prof = None  # NaN / None in a table
        return rod_thickness(
            dy,
            dx,
            length_nm=size,
            diameter_nm=float(particle.get("diameter_nm", 15.0)),
            orientation_deg=th,
            radius_profile_nm=prof,
            pixel_size_nm=pixel_size_nm,
        )
    if shape == "cube":
        rd = _nan0(particle.get("recess_depth", 0.15))
        return cube_thickness(
            dy,
            dx,
            edge_nm=size,
            orientation_deg=th,
            recess_depth=float(rd),
            pixel_size_nm=pixel_size_nm,
        )
    if shape == "ellipsoid":
        return ellipsoid_thickness(
            dy,
            dx,
            length_nm=size,
            width_nm=float(particle.get("diameter_nm", 15.0)),
            orientation_deg=th,
            pixel_size_nm=pixel_size_nm,
        )
    raise ValueError(f"unknown shape {shape!r}; expected prism, rod, cube, sphere or ellipsoid")


def _nan0(x):
    try:
        return 0.0 if x is None or np.isnan(x) else x
    except TypeError:
        return x
