"""The paper's figures (Fig. 2-5) from a :class:`minrep.analysis.Analysis`, the figure of a
training run's history, and the HTML page that shows the figures next to the numbers. Every
figure is drawn on its own :class:`matplotlib.figure.Figure` (pyplot's global state and the
user's backend are left alone) and written atomically as a PNG; the page links them by
relative path, so a report directory can be moved or opened offline."""

from __future__ import annotations

import html
import json
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from minrep import io, stats
from minrep.analysis import (
    YARDSTICKS,
    Analysis,
    BMGeneration,
    FBMGeneration,
    LatentPhase,
    LikelihoodPhase,
    ReadoutPhase,
    SBMGeneration,
    TrainingRange,
)
from minrep.model import SURVIVAL_KL


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _save(figure: Figure, path: Path) -> Path:
    with io.atomic_write(path, suffix=".png") as tmp:
        figure.savefig(tmp, dpi=100, format="png", bbox_inches="tight")
    return path


def _shade_training_range(ax, low, high, axis="x"):
    span = ax.axvspan if axis == "x" else ax.axhspan
    span(low, high, color="0.88", zorder=0, label="training range")


def _colorbar(figure: Figure, ax, cmap: str, low: float, high: float, label: str):
    mappable = ScalarMappable(Normalize(low, high), matplotlib.colormaps[cmap])
    return figure.colorbar(mappable, ax=ax, label=label)


def latents_vs_parameters(latents: LatentPhase, training_range: TrainingRange, path: Path) -> Path:
    """Fig. 2: 2D histograms of each surviving latent's mean against alpha and log10 D."""
    kept = latents.surviving or [int(np.argmax(latents.mu.var(0)))]
    columns = [("alpha", latents.alpha)] if np.ptp(latents.alpha) > 0 else []
    columns.append(("log10 D", np.log10(latents.D)))
    figure = _figure(4.2 * len(columns), 3.2 * len(kept))
    axes = figure.subplots(len(kept), len(columns), squeeze=False)
    for row, latent in enumerate(kept):
        for col, (name, values) in enumerate(columns):
            ax = axes[row, col]
            bins = (min(49, len(np.unique(values))), 60)
            ax.hist2d(values, latents.mu[:, latent], bins=bins, cmap="viridis", cmin=1)
            edges = training_range.alpha if name == "alpha" else np.log10(training_range.D)
            for edge in edges:
                ax.axvline(edge, color="k", lw=1, ls="--")
            ax.set_xlabel(name)
            ax.set_ylabel(f"latent {latent} (posterior mean)")
    figure.suptitle("What each surviving latent encodes (dashed: training range)")
    return _save(figure, path)


_LAGS = "{}-{}".format(*stats.CLASSICAL_LAGS)  # the TA-MSD fit window, as "1-9"

READOUT_CURVES = (
    ("readout", "latent readout", "C0", "-"),
    ("classical", f"TA-MSD fit (lags {_LAGS})", "C1", "-"),
    ("decoder_steps", "best possible, steps the decoder predicts", "k", "--"),
    ("all_steps", "best possible, all steps", "0.5", ":"),
)


def readout_errors(readouts: ReadoutPhase, path: Path) -> Path | None:
    """RMS error of each estimate of alpha and log10 D against the true value (scored half of
    the in-range test set): where the latents lose information, next to the best possible."""
    if not readouts.parameters:
        return None
    n = len(readouts.parameters)
    figure = _figure(5.5 * n, 3.8)
    axes = figure.subplots(1, n, squeeze=False)[0]
    for ax, (name, r) in zip(axes, readouts.parameters.items(), strict=True):
        estimates = {"readout": r.readout, "classical": r.classical, **r.bayes}
        values = np.unique(r.truth)
        for key, label, color, style in READOUT_CURVES:
            if key not in estimates:
                continue
            error2 = (estimates[key] - r.truth) ** 2
            rms = [np.sqrt(np.nanmean(error2[r.truth == v])) for v in values]
            ax.plot(values, rms, color=color, ls=style, marker=".", label=label)
        ax.set(xlabel=f"true {name.replace('_', ' ')}", ylabel="RMS error", yscale="log")
    figure.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=4)
    figure.suptitle("Estimates of the parameters from the latents, against the best possible")
    return _save(figure, path)


VIEWS = [(elev, azim) for elev in (20, 30, 45) for azim in range(-180, 180, 15)]


def view_angles(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[float, float]:
    """(elevation, azimuth) in degrees of the view of :data:`VIEWS` that sees the surface
    ``z`` over the grid ``x``, ``y`` (2D arrays of one shape) most face-on: the largest mean
    cosine between the direction of view and the normals of the grid cells, with each axis
    scaled as matplotlib's 3D box scales it (x, y, z spanning 4, 4, 3)."""

    def box(v, length):
        span = np.nanmax(v) - np.nanmin(v)
        return length * (v - np.nanmin(v)) / (span if span > 0 else 1.0)

    p = np.stack([box(x, 4.0), box(y, 4.0), box(z, 3.0)], -1)  # (nx, ny, 3)
    normals = np.cross(p[1:, :-1] - p[:-1, :-1], p[:-1, 1:] - p[:-1, :-1]).reshape(-1, 3)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True) + 1e-300

    def seen(view):
        elev, azim = np.radians(view)
        direction = [np.cos(elev) * np.cos(azim), np.cos(elev) * np.sin(azim), np.sin(elev)]
        return abs(np.nanmean(normals @ direction))

    return max(VIEWS, key=seen)


def latent_surfaces(likelihood: LikelihoodPhase, surviving: list[int], path: Path) -> Path | None:
    """Fig. 5: mean of each surviving latent over the (alpha, log10 D) grid, as surfaces,
    each seen from the angle that shows it best (:func:`view_angles`)."""
    if len(likelihood.cell_alpha) < 2 or len(likelihood.cell_D) < 2 or not surviving:
        return None
    grid_alpha, grid_d = np.meshgrid(
        likelihood.cell_alpha, np.log10(likelihood.cell_D), indexing="ij"
    )
    figure = Figure(figsize=(5 * len(surviving), 4.6))
    for i, latent in enumerate(surviving):
        ax = figure.add_subplot(1, len(surviving), i + 1, projection="3d")
        surface = likelihood.mu_cells[..., latent]
        ax.plot_surface(grid_alpha, grid_d, surface, cmap="coolwarm", edgecolor="none")
        elev, azim = view_angles(grid_alpha, grid_d, surface)
        ax.view_init(elev=elev, azim=azim)
        ax.set(xlabel="alpha", ylabel="log10 D", zlabel=f"mean latent {latent}")
        ax.set_title(f"latent {latent}", fontsize=10)
    figure.suptitle("Mean latent over the (alpha, log10 D) grid")
    return _save(figure, path)


def nll_vs_alpha(likelihood: LikelihoodPhase, training_range: TrainingRange, path: Path) -> Path:
    """Fig. 4: mean NLL per (alpha, D) cell against alpha, coloured by D, next to the exact
    NLL and the difference; against log10 D for a test set of one alpha (BM)."""
    panels = [("model NLL", likelihood.nll_cells)]
    if likelihood.exact_nll_cells is not None:
        panels.append(("exact NLL", likelihood.exact_nll_cells))
        panels.append(("model - exact", likelihood.nll_cells - likelihood.exact_nll_cells))
    one_alpha = len(likelihood.cell_alpha) < 2
    figure = _figure(4.8 * len(panels) + (0 if one_alpha else 1), 3.8)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    log_d = np.log10(likelihood.cell_D)
    low, high = log_d.min(), max(log_d.max(), log_d.min() + 1e-9)
    colours = matplotlib.colormaps["viridis"]((log_d - low) / (high - low))
    for ax, (name, cells) in zip(axes, panels, strict=True):
        if one_alpha:
            ax.plot(log_d, cells[0], ".-", ms=4, lw=0.8)
            _shade_training_range(ax, *np.log10(training_range.D))
        else:
            for j in range(len(log_d)):
                ax.plot(likelihood.cell_alpha, cells[:, j], ".-", color=colours[j], ms=3, lw=0.8)
            _shade_training_range(ax, *training_range.alpha)
        ax.set(xlabel="log10 D" if one_alpha else "alpha", title=f"{name} (nat per displacement)")
    axes[0].set_ylabel("mean NLL per (alpha, D) cell")
    axes[0].legend(fontsize=7, loc="best")
    if len(panels) > 1:
        axes[1].sharey(axes[0])
        axes[-1].axhline(0, color="k", lw=0.8)
    if not one_alpha:
        bar = _colorbar(figure, axes, "viridis", low, high, "log10 D (black: training range)")
        for edge in np.log10(training_range.D):
            bar.ax.axhline(edge, color="k", lw=1.5)
    return _save(figure, path)


def fbm_generation(g: FBMGeneration, training_range: TrainingRange, path: Path) -> Path:
    """Fig. 3a and 3b: displacement autocorrelation of generated against input trajectories,
    the exponent alpha_g over sliding windows of lags, and the two insets (alpha_g from one
    fit over short and over long lags against the input alpha)."""
    figure = _figure(12, 8.5)
    axes = figure.subplots(2, 2)
    ax = axes[0, 0]
    for k, (alpha, c) in enumerate(g.correlation.items()):
        lags = np.arange(1, len(c.generated))
        ax.plot(lags, np.abs(c.generated[1:]), color=f"C{k}", label=f"generated, alpha {alpha:.2f}")
        label = "input trajectories" if k == 0 else None
        ax.plot(lags, np.abs(c.input[1:]), ".", color=f"C{k}", ms=3, label=label)
        ax.plot(lags, np.abs(c.exact[1:]), ":", color=f"C{k}", lw=1)
    ax.axvline(g.receptive_field, color="k", ls="--", lw=1, label="receptive field")
    ax.set(xscale="log", yscale="log", xlabel="lag dt", ylabel="|C(dt)|")
    ax.set_title("3a: displacement autocorrelation (dotted: exact)", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    ax = axes[0, 1]
    cmap, low, high = "plasma", g.alphas.min(), max(g.alphas.max(), g.alphas.min() + 1e-9)
    colours = matplotlib.colormaps[cmap]((g.alphas - low) / (high - low))
    for i in range(len(g.alphas)):
        ax.plot(g.window_centres, g.alpha_g[i], color=colours[i], lw=0.8)
    ax.axvline(g.receptive_field, color="k", ls="--", lw=1)
    ax.set(xscale="log", xlabel="lag (window centre)", ylabel="alpha_g")
    ax.set_title(
        "3b: sliding exponent of the generated TA-MSD (dashed: receptive field)", fontsize=10
    )
    _colorbar(figure, ax, cmap, low, high, "input alpha")
    for ax, values, exact, lags in (
        (axes[1, 0], g.alpha_g_short, g.exact_short, "1-20"),
        (axes[1, 1], g.alpha_g_long, g.exact_long, f"{g.max_lag - 20}-{g.max_lag}"),
    ):
        _shade_training_range(ax, *training_range.alpha)
        ax.plot(g.alphas, values, "o", ms=3, label="generated")
        ax.plot([0, 2], [0, 2], "k:", lw=1, label="alpha_g = alpha")
        if not np.allclose(exact, g.alphas, atol=1e-6):  # inputs recorded with a measurement
            ax.plot(g.alphas, exact, "k-", lw=1, label="the inputs' recorded process (exact)")
        ax.set(xlabel="input alpha", ylabel="alpha_g", xlim=(0, 2), ylim=(0, 2.2))
        ax.set_title(f"alpha_g from one fit over lags {lags}", fontsize=10)
        ax.legend(fontsize=7, loc="upper left")
    return _save(figure, path)


def sbm_generation(g: SBMGeneration, training_range: TrainingRange, path: Path) -> Path:
    """Fig. 3c and 3d: alpha_g from the ageing TEA-MSD against the input alpha for several
    D, and D(t) of generated trajectories against the exact scaling."""
    figure = _figure(11.5, 4.2)
    ax, ax_d = figure.subplots(1, 2)
    _shade_training_range(ax, *training_range.alpha)
    for j, d in enumerate(g.D):
        ax.plot(g.alphas, g.alpha_g[:, j], "o", ms=3, color=f"C{j}", label=f"D = {d:.2g}")
    inputs = np.nanmean(g.alpha_input, 1)
    ax.plot(g.alphas, inputs, "k-", lw=1, label="same estimate of the inputs")
    ax.plot([0, 2], [0, 2], "k:", lw=1)
    ax.set(xlabel="input alpha", ylabel="alpha_g (TEA-MSD ageing, lag 2, last 55 %)")
    ax.set_title("3c: ageing exponent of generated trajectories", fontsize=10)
    ax.legend(fontsize=7)
    for k, (alpha, curves) in enumerate(g.diffusion.items()):
        t = np.arange(1, len(curves.generated) + 1)
        ax_d.plot(t, curves.generated, color=f"C{k}", lw=0.8, label=f"generated, alpha {alpha:.2f}")
        ax_d.plot(t, curves.exact, "k--", lw=1)
    ax_d.axvline(g.receptive_field, color="k", ls=":", lw=1, label="generated from here on")
    ax_d.set(xscale="log", yscale="log", xlabel="t (steps)", ylabel="D(t) = Var(dx_t) / 2")
    ax_d.set_title(f"3d: D(t) at D = {g.D_shown:.2g} (dashed: exact)", fontsize=10)
    ax_d.legend(fontsize=7)
    return _save(figure, path)


def bm_generation(g: BMGeneration, training_range: TrainingRange, path: Path) -> Path:
    """Generated D against the input's D (the same estimate, mean dx^2 / 2), with the
    training range of D."""
    figure = _figure(5, 4.4)
    ax = figure.subplots()
    _shade_training_range(ax, *training_range.D)
    ax.loglog(g.D_input, g.D_generated, ".", ms=2, alpha=0.5, label="one trajectory")
    lims = [min(g.D_label) / 3, max(g.D_label) * 3]
    ax.plot(lims, lims, "k:", lw=1, label="generated D = input D")
    ax.set(xlabel="D of the input trajectory (mean dx^2 / 2)", ylabel="D of the generated one")
    ax.set_title("Brownian motion: generated D", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    return _save(figure, path)


GENERATION_FIGURES = {
    FBMGeneration: ("fbm", fbm_generation),
    SBMGeneration: ("sbm", sbm_generation),
    BMGeneration: ("bm", bm_generation),
}


# ---------------------------------------------------------------------------------------------
# A training run's history


def plot_training_history(run_dir) -> Path | None:
    """:func:`training_history_figure` of ``run_dir/history.csv``, written atomically to
    ``run_dir/figures/training.png``; None without a history."""
    path = Path(run_dir) / "history.csv"
    if not path.is_file():
        return None
    figure = training_history_figure(pd.read_csv(path))
    if figure is None:
        return None
    out = Path(run_dir) / "figures" / "training.png"
    with io.atomic_write(out, suffix=".png") as tmp:
        figure.savefig(tmp, dpi=110, format="png")
    return out


def training_history_figure(history: pd.DataFrame) -> Figure | None:
    """Against the epoch: the held-out KL per latent with beta; the held-out NLL with the
    exact one (every epoch inside the axis); and, where the exact NLL is known, the gap to it
    on a symmetric log scale (the approach to the best possible). None for an empty history.
    Reads the columns ``epoch``, ``stage``, ``beta``, ``val_nll``, ``val_exact_nll``,
    ``val_exact_nll_rf`` and ``kl_0 ..`` of ``history.csv``."""
    if history.empty:
        return None
    exact = history.get("val_exact_nll")
    has_exact = exact is not None and bool(exact.notna().all())
    figure = _figure(16 if has_exact else 11, 4)
    axes = figure.subplots(1, 3 if has_exact else 2)
    _plot_kl(axes[0], history)
    _plot_nll(axes[1], history, has_exact)
    if has_exact:
        _plot_gap(axes[2], history)
    return figure


def _stage_starts(ax, history: pd.DataFrame) -> None:
    """A dotted line where each stage after the first begins."""
    if "stage" in history:
        changed = history["stage"].to_numpy()[1:] != history["stage"].to_numpy()[:-1]
        for epoch in history["epoch"].to_numpy()[1:][changed]:
            ax.axvline(epoch - 0.5, color="0.6", ls=":", lw=1)


def _plot_kl(ax, history: pd.DataFrame) -> None:
    epochs = history["epoch"]
    for column in (c for c in history.columns if c.startswith("kl_")):
        ax.plot(epochs, history[column], marker=".", label=f"z{column[3:]}")
    ax.axhline(SURVIVAL_KL, color="grey", ls="--", lw=1, label="survival threshold")
    ax.set(yscale="log", xlabel="epoch", ylabel="held-out KL to the prior (nat)")
    ax.set_title("KL per latent (dotted: new stage)", fontsize=10)
    _stage_starts(ax, history)
    beta = ax.twinx()
    beta.plot(
        epochs, history["beta"], color="k", lw=1.5, alpha=0.4, drawstyle="steps-mid", label="beta"
    )
    beta.set_ylabel("beta (grey)")
    handles, labels = ax.get_legend_handles_labels()
    more, more_labels = beta.get_legend_handles_labels()
    ax.legend(
        handles + more,
        labels + more_labels,
        fontsize=7,
        ncol=5,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.15),
    )


def _plot_nll(ax, history: pd.DataFrame, has_exact: bool) -> None:
    ax.plot(history["epoch"], history["val_nll"], marker=".", label="held-out NLL (model)")
    if has_exact:
        ax.axhline(history["val_exact_nll"].iloc[0], color="k", ls="--", label="exact NLL")
    rf = history.get("val_exact_nll_rf")
    if has_exact and rf is not None and rf.notna().all():
        ax.axhline(rf.iloc[0], color="k", ls=":", label="exact NLL, memory = receptive field")
    ax.set(xlabel="epoch", ylabel="nat per displacement")
    ax.set_title("Held-out NLL (every epoch shown)", fontsize=10)
    _stage_starts(ax, history)
    ax.legend(fontsize=7)


def _plot_gap(ax, history: pd.DataFrame) -> None:
    gap = history["val_nll"] - history["val_exact_nll"]
    ax.plot(history["epoch"], gap, marker=".", color="C3", label="held-out NLL - exact NLL")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set(xlabel="epoch", ylabel="nat per displacement (symmetric log)")
    ax.set_title("Gap to the exact NLL (0: the best possible)", fontsize=10)
    _stage_starts(ax, history)
    ax.legend(fontsize=7)


# ---------------------------------------------------------------------------------------------
# The report page


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items())
    return str(value)


def _table(rows: list[tuple]) -> str:
    """Rows of (name, value) or (name, value, yardstick): what a good value is, beside the
    first number of its kind."""
    body, said = [], set()
    for name, value, *note in rows:
        yardstick = note[0] if note and note[0] not in said else ""
        said.add(yardstick)
        body.append(
            f"<tr><th>{html.escape(name)}</th><td>{html.escape(value)}</td>"
            f'<td class="yardstick">{html.escape(yardstick)}</td></tr>'
        )
    return f"<table>{''.join(body)}</table>"


def _bayes_text(bayes: dict | None) -> str:
    if not bayes:
        return ""
    return (
        f"; best possible (Bayes posterior mean, exact likelihood) R^2 "
        f"{bayes['decoder_steps']:.4f} from the steps the decoder predicts, "
        f"{bayes['all_steps']:.4f} from all steps"
    )


def _data_rows(m: dict) -> list[tuple]:
    recorded = "" if m["training_range_recorded"] else " (not recorded by the model: assumed)"
    return [
        ("process", _fmt(m["process"])),
        ("trajectories", _fmt(m["n"])),
        ("inside the training range (headline numbers)", _fmt(m["n_in_training_range"])),
        ("training range", _fmt(m["training_range"]) + recorded),
    ]


def _latent_rows(m: dict) -> list[tuple]:
    rows = [("surviving latents", _fmt(m["surviving_latents"]), YARDSTICKS["kl_per_latent"])]
    for i, kl in enumerate(m["kl_per_latent"]):
        rows.append(
            (
                f"latent {i}",
                f"KL {kl:.3g} nat ({'survives' if i in m['surviving_latents'] else 'collapsed'})"
                f", Var(mu) {m['var_mu'][i]:.3g}, mean log sigma^2 {m['mean_logvar'][i]:.3g}",
            )
        )
    if "effective_dimension" in m:
        snr = ", ".join(f"{v:.3g}" for v in m["effective_dimension_snr"])
        note = m.get("effective_dimension_note")
        rows.append(
            (
                "effective dimension",
                f"{m['effective_dimension']} (signal-to-noise ratios of the principal "
                f"directions: {snr})" + (f". {note}" if note else ""),
                YARDSTICKS["effective_dimension"],
            )
        )
    if "intrinsic_dimension" in m:
        rows.append(
            (
                "intrinsic dimension",
                _fmt(m["intrinsic_dimension"]),
                YARDSTICKS["intrinsic_dimension"],
            )
        )
    return rows


def _readout_rows(m: dict) -> list[tuple]:
    rows = []
    for name in ("alpha", "log10_D"):
        if f"r2_{name}" in m:
            text = (
                f"latent readout R^2 {m[f'r2_{name}']:.4f}, mean |error| "
                f"{m[f'readout_mae_{name}']:.4f}; TA-MSD fit (lags {_LAGS}) R^2 "
                f"{m[f'tamsd_r2_{name}']:.4f}, mean |error| {m[f'tamsd_mae_{name}']:.4f}"
            )
            rows.append((name, text + _bayes_text(m.get(f"bayes_r2_{name}")), YARDSTICKS["r2"]))
    for latent, r2 in m.get("latent_meaning", {}).items():
        what = "all surviving latents" if latent == "all" else f"latent {latent} alone"
        text = ", ".join(f"{factor} {value:.3f}" for factor, value in r2.items())
        rows.append((f"R^2 from {what}", text, YARDSTICKS["latent_meaning"]))
    rows += [(k.upper(), _fmt(m[k]), YARDSTICKS[k]) for k in ("mig", "dci") if k in m]
    if m.get("extrapolation"):
        rows.append(
            (
                "D outside the training range (Fig. 2a)",
                _fmt(m["extrapolation"]),
                YARDSTICKS["extrapolation"],
            )
        )
    for n, row in m.get("readout_by_length", {}).items():
        text = "too short for this model" if row is None else _fmt(row)
        rows.append((f"first {n} displacements", text, YARDSTICKS["readout_by_length"]))
    return rows


def _nll_rows(m: dict) -> list[tuple]:
    rows = [(k, _fmt(m[k])) for k in ("nll_mean", "exact_nll_mean") if k in m]
    if "nll_gap" in m:
        rows.append(("nll_gap", _fmt(m["nll_gap"]), YARDSTICKS["nll_gap"]))
    return rows


def _generation_rows(m: dict) -> list[tuple]:
    rows = []
    for key, value in m.get("generation", {}).items():
        yardstick = next((YARDSTICKS[y] for y in YARDSTICKS if key.startswith(y)), None)
        rows.append((key, _fmt(value), yardstick) if yardstick else (key, _fmt(value)))
    return rows


def _figures(analysis: Analysis, out: Path) -> list[tuple[Path | None, str]]:
    """Every figure of the report, drawn into ``out``, with its caption."""
    scope, latents, likelihood = analysis.training_range, analysis.latents, analysis.likelihood
    figures = [
        (
            latents_vs_parameters(latents, scope, out / "fig2_latents.png"),
            "Fig. 2: posterior mean of each surviving latent against alpha and log10 D",
        ),
        (
            readout_errors(analysis.readouts, out / "readout_errors.png"),
            "RMS error of the latent readout against the true value, next to the TA-MSD fit and "
            "the best possible estimate (Bayes posterior mean from the exact likelihood)",
        ),
        (
            latent_surfaces(likelihood, latents.surviving, out / "fig5_latent_surfaces.png"),
            "Fig. 5: mean latent over the (alpha, log10 D) grid",
        ),
        (
            nll_vs_alpha(likelihood, scope, out / "fig4_nll.png"),
            "Fig. 4: mean NLL per (alpha, D) cell next to the exact NLL (grey: training range)",
        ),
    ]
    if analysis.generation is not None:
        process, draw = GENERATION_FIGURES[type(analysis.generation)]
        figures.append(
            (
                draw(analysis.generation, scope, out / f"fig3_{process}.png"),
                "Fig. 3: trajectories generated from the encoded test trajectories",
            )
        )
    return figures


PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:auto}}
table{{border-collapse:collapse}}th,td{{border:1px solid #ccc;padding:3px 8px;text-align:left}}
td.yardstick{{color:#555;font-size:85%;max-width:420px}}
img{{max-width:100%}}</style></head><body><h1>{title}</h1>
{body}<p>All numbers: <a href="metrics.json">metrics.json</a></p></body></html>
"""


def write_report(analysis: Analysis, out, title: str = "minrep analysis") -> Path:
    """Figures, ``metrics.json`` and ``index.html`` in ``out``; returns the page's path. Each
    number on the page stands beside a line that says what a good value is
    (:data:`minrep.analysis.YARDSTICKS`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    m = analysis.metrics
    figures = _figures(analysis, out)
    with io.atomic_write(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(m, indent=2, default=float) + "\n")
    sections = [
        ("Data", _data_rows(m)),
        ("Latents", _latent_rows(m)),
        ("What the latents encode, against the classical estimate", _readout_rows(m)),
        (
            "Likelihood (nat per predicted displacement, latent at its posterior mean)",
            _nll_rows(m),
        ),
        ("Generated trajectories", _generation_rows(m)),
    ]
    parts = [f"<h2>{html.escape(h)}</h2>{_table(rows)}" for h, rows in sections]
    for path, caption in figures:
        if path is not None:
            parts.append(
                f'<figure><img src="{path.name}" alt="{html.escape(caption)}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
    page = PAGE.format(title=html.escape(title), body="".join(parts))
    with io.atomic_write(out / "index.html") as tmp:
        tmp.write_text(page)
    return out / "index.html"
