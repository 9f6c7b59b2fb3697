"""Figures of the diffusion and interaction analyses (matplotlib, Agg; PNG files)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

__all__ = ["plot_msd", "plot_van_hove", "plot_pmf", "plot_landscape"]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_msd(data: xr.Dataset, summary: dict[str, Any], path: str | Path) -> Path:
    """Log-log ensemble MSD (translation, and rotation when present) with the fitted lines.

    With a rotational correlation in ``data`` (``corr_rot``), a third panel shows
    ``<cos m dtheta>`` on a log scale with its fitted exponential.
    """
    plt = _plt()
    rot = "msd_rot" in data
    corr = "corr_rot" in data and "rotation_correlation" in summary
    n_panels = 1 + int(rot) + int(corr)
    fig, axes = plt.subplots(1, n_panels, figsize=(4.5 * n_panels, 3.8), squeeze=False)
    tau = data["lag_s"].values
    te = float(summary.get("exposure_s", 0.0))
    panels = [(axes[0, 0], "msd", "translation", 2, "nm$^2$", "nm$^2$/s")]
    if rot:
        key = "rotation_msd" if "rotation_msd" in summary else "rotation"
        panels.append((axes[0, 1], "msd_rot", key, 1, "rad$^2$", "rad$^2$/s"))
    if corr:
        ax = axes[0, n_panels - 1]
        fit = summary["rotation_correlation"]
        m = float(fit["extra"]["order_m"])
        c = data["corr_rot"].values
        ax.semilogy(tau, np.where(c > 0, c, np.nan), "o", ms=3, label="data")
        D, a = fit.get("D"), fit["extra"].get("intercept")
        if D is not None and a is not None and np.isfinite(a):
            lo, hi = fit.get("ci_low"), fit.get("ci_high")
            ci = f" [{lo:.3g}, {hi:.3g}]" if lo is not None and hi is not None else ""
            ax.semilogy(
                tau,
                np.exp(a - m * m * D * (tau - te / 3)),
                "-",
                label=f"D_r = {D:.3g}{ci} rad$^2$/s",
            )
        ax.set_xlabel("lag time (s)")
        ax.set_ylabel(f"<cos {m:g}Δθ>")
        ax.set_title("rotation: orientational correlation")
        ax.legend(fontsize=8)
    for ax, var, key, n, unit, dunit in panels:
        ax.loglog(tau, data[var].values, "o", ms=3, label="data")
        fit = summary.get(key, {})
        D, s2 = fit.get("D"), fit.get("sigma2")
        if D is not None and s2 is not None:
            model = 2 * n * D * (tau - te / 3) + 2 * n * s2
            lo, hi = fit.get("ci_low"), fit.get("ci_high")
            ci = f" [{lo:.3g}, {hi:.3g}]" if lo is not None and hi is not None else ""
            ax.loglog(
                tau, np.where(model > 0, model, np.nan), "-", label=f"D = {D:.3g}{ci} {dunit}"
            )
        ax.set_xlabel("lag time (s)")
        ax.set_ylabel(f"MSD ({unit})")
        ax.set_title(key)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_van_hove(data: xr.Dataset, path: str | Path) -> Path:
    """Self van Hove distributions (log scale) with Gaussians of equal variance."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.8, 3.8))
    x = data["displacement"].values
    for i, lag in enumerate(data["vh_lag"].values):
        (line,) = ax.semilogy(
            x,
            data["van_hove"].values[i],
            "o",
            ms=3,
            label=f"lag {lag} fr, α2={data['alpha2'].values[i]:.2f}",
        )
        ax.semilogy(x, data["van_hove_gaussian"].values[i], "-", color=line.get_color(), lw=1)
    ax.set_xlabel("displacement along an axis (nm)")
    ax.set_ylabel("probability density (1/nm)")
    ax.set_ylim(
        bottom=max(
            1e-7, np.nanmin(np.where(data["van_hove"].values > 0, data["van_hove"].values, np.nan))
        )
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_pmf(data: xr.Dataset, summary: dict[str, Any], path: str | Path, *, truth=None) -> Path:
    """g(r) and U(r) = -kT ln g(r) with bootstrap error bars."""
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
    r = data["r"].values
    a1.errorbar(r, data["g"].values, yerr=data["g_err"].values, fmt="o", ms=2, lw=0.8)
    a1.axhline(1.0, color="0.5", lw=0.8)
    a1.set_xlabel("centre distance r (nm)")
    a1.set_ylabel("g(r)")
    a2.errorbar(
        r, data["pmf"].values, yerr=data["pmf_err"].values, fmt="o", ms=2, lw=0.8, label="measured"
    )
    if truth is not None:
        a2.plot(truth[0], truth[1], "-", lw=1, label="truth")
    w = summary.get("well", {})
    if w.get("position_nm") is not None:
        a2.axvline(w["position_nm"], color="0.6", ls="--", lw=0.8)
        a2.set_title(
            f"well {w['depth_kT']:.2f} ± {w.get('depth_err_kT') or 0:.2f} kT at {w['position_nm']:.1f} nm"
        )
    a2.axhline(0.0, color="0.5", lw=0.8)
    a2.set_xlabel("centre distance r (nm)")
    a2.set_ylabel("U(r) (kT)")
    a2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_landscape(data: xr.Dataset, path: str | Path) -> Path:
    """Free-energy map of neighbours in the reference particle's body frame (kT)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    u, v = data["u"].values, data["v"].values
    F = data["free_energy"].values
    lim = np.nanmax(np.abs(F[np.isfinite(F)])) if np.isfinite(F).any() else 1.0
    im = ax.pcolormesh(u, v, F.T, cmap="RdBu_r", vmin=-lim, vmax=lim, shading="nearest")
    fig.colorbar(im, ax=ax, label="free energy (kT)")
    ax.plot([0], [0], "k+")
    ax.annotate("", xy=(0.25 * u.max(), 0), xytext=(0, 0), arrowprops=dict(arrowstyle="->"))
    ax.set_aspect("equal")
    ax.set_xlabel("u along the reference vertex axis (nm)")
    ax.set_ylabel("v, 90° CCW (nm)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
