"""Chaining self-assembly of concave nanocubes (or spheres) by kinetic Monte Carlo.

Particles attach face to face into linear chains. The sequence of attachment
events is drawn exactly (Gillespie's direct method, with thinning where noted)
under one of three kinetic laws, for ``N`` particles in the field of view
(rate constants are per field of view, i.e. per count, not per concentration):

``first_order``
    Each monomer leaves the monomer pool at rate ``k`` (1/s): an
    activation-limited attachment to a partner drawn uniformly among the other
    clusters; a monomer-monomer encounter consumes two monomers, so it is
    accepted with probability 1/2 (thinning). Event rates: monomer-chain
    ``k M N_c / (N - 1)``, monomer-monomer ``k M (M - 1) / (2 (N - 1))``,
    chain-chain 0; hence ``E[M(t)] = M_0 exp(-k t)`` exactly.
``second_order``
    Step growth (Flory): every pair of clusters bonds at rate ``k`` (1/s per
    pair), whatever their sizes. Mean field: ``N(t) = N_0 / (1 + k N_0 t / 2)``,
    number-average degree of polymerisation ``X_n = 1 + k N_0 t / 2``.
``smoluchowski``
    Coagulation with the size-dependent kernel
    ``K(i, j) = k (i^-nu + j^-nu) / 2`` (1/s per pair; ``nu`` =
    ``kernel_exponent``; ``nu = 0`` is ``second_order``), the mobility-limited
    kernel of chains whose diffusion slows with length.

Every cluster is a linear chain. When clusters A and B bond, the new chain is
A's sequence followed by B's, so every cluster at every time is a contiguous
block of its final chain. The layout uses this: the final chains are shelf-
packed in rows (room for ``edge_nm + open_gap_nm`` per particle); in each
frame the particles of one final chain are drawn in order along its row,
``bond_gap_nm`` apart within a cluster and ``open_gap_nm`` apart between
clusters, centred on the chain's room. Particles never overlap, and a bond
moves particles by at most ``(open_gap_nm - bond_gap_nm) / 2`` each, so a
merged chain overlaps its parents from frame to frame.

References
----------
Gillespie, D. T. J. Phys. Chem. 81, 2340 (1977).
Flory, P. J. Principles of Polymer Chemistry (1953), step-growth kinetics.
Smoluchowski, M. v. Z. Phys. Chem. 92, 129 (1917).
Yao, L. et al. ACS Cent. Sci. 6, 1421 (2020), chaining of concave nanocubes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from ..config import StageConfig, load_config
from ..errors import ConfigError

__all__ = [
    "LAWS",
    "AssemblyConfig",
    "AssemblyTruth",
    "load_assembly_config",
    "simulate_assembly",
    "simulate_assembly_video",
    "assembly_particles",
]

logger = logging.getLogger(__name__)

Law = Literal["first_order", "second_order", "smoluchowski"]
LAWS: tuple[str, ...] = ("first_order", "second_order", "smoluchowski")


class AssemblyConfig(StageConfig):
    """A simulated chaining-assembly video: kinetics, geometry and imaging.

    Rate constants are per field of view: ``first_order`` in 1/s per monomer,
    ``second_order`` and ``smoluchowski`` in 1/s per pair of clusters.
    """

    law: Law = "first_order"
    rate_constant_per_s: float = Field(default=0.05, gt=0, description="k (see module doc)")
    kernel_exponent: float = Field(
        default=1.0, ge=0, le=3, description="nu of the Smoluchowski kernel"
    )
    n_monomers: int = Field(default=400, ge=2, le=20000)
    n_frames: int = Field(default=60, ge=2)
    frame_interval_s: float = Field(default=1.0, gt=0)
    shape: Literal["cube", "sphere"] = "cube"
    edge_nm: float = Field(default=20.0, gt=0, description="cube edge or sphere diameter")
    recess_depth: float = Field(default=0.15, ge=0, lt=0.5, description="concave cube recess / L")
    bond_gap_nm: float = Field(
        default=2.0, ge=0, description="face-to-face gap of bonded neighbours"
    )
    open_gap_nm: float = Field(
        default=12.0, gt=0, description="minimum gap between unbonded particles"
    )
    row_gap_nm: float = Field(default=16.0, gt=0, description="gap between rows of the layout")
    margin_nm: float = Field(default=20.0, ge=0, description="empty border of the field")
    pixel_size_nm: float = Field(default=2.0, gt=0)
    simulation: str = Field(
        default="cubes", description="simulator preset or YAML path giving optics and background"
    )
    target_cnr: float | None = Field(default=None, gt=0, description="overrides the preset's CNR")


def load_assembly_config(path_or_name: str | Path | AssemblyConfig | None) -> AssemblyConfig:
    """Load an :class:`AssemblyConfig` from YAML (``configs/assembly/*.yaml``).

    Parameters
    ----------
    path_or_name : str, Path, AssemblyConfig or None
        A YAML path, a config (returned as is), or None for the defaults.
    """
    if path_or_name is None:
        return AssemblyConfig()
    if isinstance(path_or_name, AssemblyConfig):
        return path_or_name
    p = Path(path_or_name)
    if not p.exists():
        raise ConfigError(
            f"`config` must be an AssemblyConfig or a YAML path, got {str(p)!r}, which does "
            "not exist; see configs/assembly/*.yaml"
        )
    return load_config(p, AssemblyConfig)


@dataclass
class AssemblyTruth:
    """Ground truth of one simulated assembly video.

    Attributes
    ----------
    particles : pandas.DataFrame
        One row per particle per frame: ``frame``, ``time_s``, ``particle``,
        ``chain`` (cluster id, the id of its first particle), ``chain_size``,
        ``y_nm``, ``x_nm`` (centre, nm from the field's top-left corner),
        ``y``, ``x`` (px, first pixel centre at 0) and ``orientation_deg``.
    merges : pandas.DataFrame
        Every bonding event: ``time_s``, ``chain_a``, ``chain_b`` (ids before;
        the result keeps ``chain_a``), ``size_a``, ``size_b``.
    config : AssemblyConfig
    image_size_px : int
        Side of the square field, px.
    labels : numpy.ndarray of int32, shape (frame, y, x), or None
        Instance labels of the rendered video (particle id + 1), when rendered.
    """

    particles: pd.DataFrame
    merges: pd.DataFrame
    config: AssemblyConfig
    image_size_px: int
    labels: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def chains(self) -> pd.DataFrame:
        """One row per cluster per frame: ``frame``, ``time_s``, ``chain``, ``size``."""
        g = self.particles.groupby(["frame", "chain"], sort=True)
        out = g.agg(time_s=("time_s", "first"), size=("particle", "size")).reset_index()
        return out[["frame", "time_s", "chain", "size"]]


# ----------------------------------------------------------------------------- kinetics
def _gillespie(cfg: AssemblyConfig, rng: np.random.Generator, t_end: float):
    """Exact event sequence up to ``t_end``: list of (time, a, b) and final cluster lists."""
    n = cfg.n_monomers
    k = cfg.rate_constant_per_s
    nu = cfg.kernel_exponent
    members: dict[int, list[int]] = {i: [i] for i in range(n)}
    ids = list(range(n))  # cluster ids, position index kept in pos
    pos = {i: i for i in range(n)}
    monomers = list(range(n))
    mpos = {i: i for i in range(n)}
    events: list[tuple[float, int, int, int, int]] = []
    t = 0.0

    def remove(lst: list[int], where: dict[int, int], c: int) -> None:
        i = where.pop(c)
        last = lst.pop()
        if last != c:
            lst[i] = last
            where[last] = i

    def weight(c: int) -> float:
        return float(len(members[c])) ** (-nu)

    W = float(n)  # sum of weights (smoluchowski), all monomers
    while True:
        N = len(ids)
        M = len(monomers)
        if N < 2:
            break
        if cfg.law == "first_order":
            if M == 0:
                break
            rate = k * M
        elif cfg.law == "second_order":
            rate = k * N * (N - 1) / 2.0
        else:
            rate = 0.5 * k * (N - 1) * W
        t += rng.exponential(1.0 / rate)
        if t > t_end:
            break
        if cfg.law == "first_order":
            a = monomers[int(rng.integers(M))]
            b = ids[int(rng.integers(N - 1))]
            if b == a:
                b = ids[N - 1]
            if len(members[b]) == 1 and rng.random() >= 0.5:
                continue  # thinning: monomer-monomer pairs count once
        elif cfg.law == "second_order":
            i, j = rng.choice(N, size=2, replace=False)
            a, b = ids[int(i)], ids[int(j)]
        else:
            w = np.array([weight(c) for c in ids])
            i = int(rng.choice(N, p=w / w.sum()))
            j = int(rng.integers(N - 1))
            if j >= i:
                j += 1
            a, b = ids[i], ids[j]
        sa, sb = len(members[a]), len(members[b])
        events.append((t, a, b, sa, sb))
        if cfg.law == "smoluchowski":
            W += (sa + sb) ** (-nu) - sa ** (-nu) - sb ** (-nu)
        members[a] = members[a] + members.pop(b)
        remove(ids, pos, b)
        for c, s in ((a, sa), (b, sb)):
            if s == 1:
                remove(monomers, mpos, c)
    return events


def _membership(n: int, events, times: np.ndarray) -> np.ndarray:
    """Cluster id of each particle at each frame time, shape (frame, particle)."""
    out = np.empty((len(times), n), np.int64)
    owner = np.arange(n)
    members: dict[int, list[int]] = {i: [i] for i in range(n)}
    e = 0
    for f, tf in enumerate(times):
        while e < len(events) and events[e][0] <= tf:
            _, a, b, _, _ = events[e]
            mb = members.pop(b)
            owner[mb] = a
            members[a] = members[a] + mb
            e += 1
        out[f] = owner
    return out


def _final_chains(n: int, events) -> list[list[int]]:
    members: dict[int, list[int]] = {i: [i] for i in range(n)}
    for _, a, b, _, _ in events:
        members[a] = members[a] + members.pop(b)
    return sorted(members.values(), key=len, reverse=True)


def _layout(cfg: AssemblyConfig, chains: list[list[int]], rng: np.random.Generator):
    """Slot positions (nm) of every particle: shelf packing of the final chains in rows."""
    slot = cfg.edge_nm + cfg.open_gap_nm
    pitch = cfg.edge_nm + cfg.row_gap_nm
    total = sum(len(c) for c in chains) * slot
    width = max(max(len(c) for c in chains) * slot, np.sqrt(total * pitch))
    rows: list[list[list[int]]] = [[]]
    used = [0.0]
    for c in chains:  # first fit decreasing
        need = len(c) * slot
        for r in range(len(rows)):
            if used[r] + need <= width + 1e-9:
                rows[r].append(c)
                used[r] += need
                break
        else:
            rows.append([c])
            used.append(need)
    side = max(width, len(rows) * pitch) + 2 * cfg.margin_nm
    size_px = int(np.ceil(side / cfg.pixel_size_nm))
    side = size_px * cfg.pixel_size_nm
    y0 = 0.5 * (side - len(rows) * pitch) + 0.5 * pitch
    slot_x = np.zeros(cfg.n_monomers)
    slot_y = np.zeros(cfg.n_monomers)
    for r, row in enumerate(rows):
        order = rng.permutation(len(row))
        x = 0.5 * (side - used[r]) + 0.5 * slot
        for o in order:
            for p in row[o]:
                slot_x[p] = x
                slot_y[p] = y0 + r * pitch
                x += slot
    return slot_y, slot_x, size_px


def simulate_assembly(
    config: AssemblyConfig | str | Path | None = None, *, seed: int = 0
) -> AssemblyTruth:
    """Kinetic Monte Carlo of chaining assembly and its layout, without rendering (fast path).

    Parameters
    ----------
    config : AssemblyConfig, YAML path or None
    seed : int
        Fixes the event sequence and the layout.

    Returns
    -------
    AssemblyTruth
        Per-frame chain membership and positions, and the list of bonding events.

    Examples
    --------
    >>> t = simulate_assembly(AssemblyConfig(n_monomers=50, n_frames=5), seed=1)
    >>> int(t.particles.groupby("frame").size().iloc[0])
    50
    """
    cfg = load_assembly_config(config)
    rng = np.random.default_rng([int(seed), 7])
    times = np.arange(cfg.n_frames) * cfg.frame_interval_s
    events = _gillespie(cfg, rng, float(times[-1]))
    n = cfg.n_monomers
    memb = _membership(n, events, times)
    chains = _final_chains(n, events)
    slot_y, slot_x, size_px = _layout(cfg, chains, rng)
    final = np.empty(n, np.int64)  # final chain of each particle
    order = np.empty(n, np.int64)  # index of each particle within its final chain
    for i, c in enumerate(chains):
        final[c] = i
        order[c] = np.arange(len(c))
    seq = np.lexsort((order, final))  # particles in final-chain order
    fin_s = final[seq]
    new_chain = np.r_[True, fin_s[1:] != fin_s[:-1]]
    # centre of each final chain's slots
    centre_fc = pd.Series(slot_x).groupby(final).mean().to_numpy()
    rows = []
    for f, tf in enumerate(times):
        owner = memb[f]
        own_s = owner[seq]
        same = np.r_[False, own_s[1:] == own_s[:-1]]
        step = np.where(
            new_chain,
            0.0,
            np.where(same, cfg.edge_nm + cfg.bond_gap_nm, cfg.edge_nm + cfg.open_gap_nm),
        )
        xs = pd.Series(step).groupby(fin_s).cumsum().to_numpy()
        lo = pd.Series(xs).groupby(fin_s).transform("min").to_numpy()
        hi = pd.Series(xs).groupby(fin_s).transform("max").to_numpy()
        x = np.empty(n)
        x[seq] = centre_fc[fin_s] + xs - 0.5 * (lo + hi)
        size = np.bincount(owner, minlength=n)[owner]
        rows.append(
            pd.DataFrame(
                {
                    "frame": np.full(n, f, np.int64),
                    "time_s": np.full(n, tf),
                    "particle": np.arange(n, dtype=np.int64),
                    "chain": owner.astype(np.int64),
                    "chain_size": size.astype(np.int64),
                    "y_nm": slot_y,
                    "x_nm": x,
                }
            )
        )
    parts = pd.concat(rows, ignore_index=True)
    parts["y"] = parts["y_nm"] / cfg.pixel_size_nm - 0.5
    parts["x"] = parts["x_nm"] / cfg.pixel_size_nm - 0.5
    parts["orientation_deg"] = 0.0
    merges = pd.DataFrame(events, columns=["time_s", "chain_a", "chain_b", "size_a", "size_b"])
    logger.info("assembly %s: %d events in %d frames", cfg.law, len(events), cfg.n_frames)
    return AssemblyTruth(parts, merges, cfg, size_px)


def assembly_particles(truth: AssemblyTruth, frame: int) -> pd.DataFrame:
    """Particle list of one frame in the form the image simulator renders.

    Columns: ``y``, ``x`` (px), ``y_nm``, ``x_nm``, ``shape``, ``size_nm``,
    ``orientation_deg``, ``recess_depth``, ``labelled`` (True) and
    ``particle``.
    """
    cfg = truth.config
    p = truth.particles[truth.particles["frame"] == frame]
    return pd.DataFrame(
        {
            "particle": p["particle"].to_numpy(),
            "y": p["y"].to_numpy(),
            "x": p["x"].to_numpy(),
            "y_nm": p["y_nm"].to_numpy(),
            "x_nm": p["x_nm"].to_numpy(),
            "shape": cfg.shape,
            "size_nm": cfg.edge_nm,
            "orientation_deg": p["orientation_deg"].to_numpy(),
            "recess_depth": cfg.recess_depth,
            "labelled": True,
        }
    )


def simulate_assembly_video(config: AssemblyConfig | str | Path | None = None, *, seed: int = 0):
    """Render a simulated assembly video through the LPTEM image simulator.

    Parameters
    ----------
    config : AssemblyConfig, YAML path or None
    seed : int
        Fixes the kinetics, the layout and (with the frame number) every frame's noise.

    Returns
    -------
    video : xr.DataArray, dims (frame, y, x)
        The noisy frames (``lp.from_array`` conventions).
    truth : AssemblyTruth
        With ``labels`` (int32, particle id + 1) of every frame.
    """
    truth = simulate_assembly(config, seed=seed)
    cfg = truth.config
    frames = [assembly_particles(truth, f) for f in range(cfg.n_frames)]
    video, labels = _render_video(
        frames,
        simulation=cfg.simulation,
        image_size_px=truth.image_size_px,
        pixel_size_nm=cfg.pixel_size_nm,
        frame_interval_s=cfg.frame_interval_s,
        target_cnr=cfg.target_cnr,
        seed=seed,
        source=f"simulate_assembly_video({cfg.law}, seed={seed})",
    )
    truth.labels = labels
    return video, truth


def _render_video(
    frames: list[pd.DataFrame],
    *,
    simulation: str,
    image_size_px: int,
    pixel_size_nm: float,
    frame_interval_s: float,
    target_cnr: float | None,
    seed: int,
    source: str,
):
    """Render explicit per-frame particle tables with the image simulator.

    The optics, background and dose (chosen on frame 0 for the target CNR) are
    fixed for the whole video; shot noise of frame ``f`` is seeded from
    ``(seed, f)``. Returns the video (``lp.from_array``) and the int32 labels
    (frame, y, x) with label = row's ``particle`` + 1.
    """
    from ..io import from_array
    from .config import load_simulation_config
    from .scene import make_background, render_frame, sample_image_params

    sim = load_simulation_config(simulation)
    optics = sim.optics.model_copy(
        update={"image_size_px": int(image_size_px), "pixel_size_nm": float(pixel_size_nm)}
    )
    update: dict[str, Any] = {"optics": optics}
    if target_cnr is not None:
        update["target_cnr"] = float(target_cnr)
    sim = sim.model_copy(update=update)
    rng0 = np.random.default_rng(np.random.SeedSequence([int(seed), 0xA55]))
    params = sample_image_params(rng0, sim)
    params["pixel_size_nm"] = float(pixel_size_nm)
    params["diffusion_nm2_s"] = 0.0
    background = make_background(sim, rng=rng0, params=params)
    n = int(image_size_px)
    images = np.empty((len(frames), n, n), np.float32)
    labels = np.empty((len(frames), n, n), np.int32)
    n_e = None
    for f, parts in enumerate(frames):
        parts = parts.copy()
        parts["label"] = (parts["particle"].to_numpy() + 1).astype(np.int32)
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xF4A, int(f)]))
        res = render_frame(
            parts, sim, rng=rng, params=params, background=background, electrons_per_px=n_e
        )
        if n_e is None:
            n_e = float(res["electrons_per_px"])
        images[f] = res["image"]
        labels[f] = res["labels"]
    video = from_array(
        images, pixel_size_nm=pixel_size_nm, frame_interval_s=frame_interval_s, source=source
    )
    video.attrs["electrons_per_px"] = n_e
    return video, labels
