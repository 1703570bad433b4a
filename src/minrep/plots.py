"""The paper's figures (Fig. 2-5) from a :class:`minrep.analysis.Analysis`, and the HTML page
that shows them next to the numbers. Every figure is a PNG written atomically; the page links
them by relative path, so a report directory can be moved or opened offline."""

from __future__ import annotations

import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from minrep import io  # noqa: E402
from minrep.analysis import Analysis  # noqa: E402


def _save(figure, path: Path) -> Path:
    with io.atomic_write(path, suffix=".png") as tmp:
        figure.savefig(tmp, dpi=100, format="png", bbox_inches="tight")
    plt.close(figure)
    return path


def _shade_training_range(ax, low, high, axis="x"):
    span = ax.axvspan if axis == "x" else ax.axhspan
    span(low, high, color="0.85", zorder=0, label="training range")


def latents_vs_parameters(a: dict, path: Path) -> Path:
    """Fig. 2: 2D histograms of each surviving latent's mean against alpha and log10 D."""
    kept = a["surviving"] or [int(np.argmax(a["mu"].var(0)))]
    columns = [("alpha", a["alpha"])] if np.ptp(a["alpha"]) > 0 else []
    columns.append(("log10 D", np.log10(a["D"])))
    figure, axes = plt.subplots(
        len(kept), len(columns), figsize=(4.2 * len(columns), 3.2 * len(kept)), squeeze=False
    )
    for row, latent in enumerate(kept):
        for col, (name, values) in enumerate(columns):
            ax = axes[row, col]
            ax.hist2d(
                values,
                a["mu"][:, latent],
                bins=(min(49, len(np.unique(values))), 60),
                cmap="viridis",
                cmin=1,
            )
            low, high = a["training_range"]["alpha" if name == "alpha" else "D"]
            if name != "alpha":
                low, high = np.log10(low), np.log10(high)
            for edge in (low, high):
                ax.axvline(edge, color="w", lw=1, ls="--")
            ax.set_xlabel(name)
            ax.set_ylabel(f"latent {latent} (posterior mean)")
    figure.suptitle("What each surviving latent encodes (dashed: training range)")
    return _save(figure, path)


READOUT_CURVES = (
    ("readout", "latent readout", "C0", "-"),
    ("classical", "TA-MSD fit (lags 1-9)", "C1", "-"),
    ("bayes_decoder_steps", "best possible, steps the decoder predicts", "k", "--"),
    ("bayes_all_steps", "best possible, all steps", "0.5", ":"),
)


def readout_errors(a: dict, path: Path) -> Path | None:
    """RMS error of each estimate of alpha and log10 D against the true value (scored half of
    the in-range test set): where the latents lose information, next to the best possible."""
    readouts = a["readouts"]
    if not readouts:
        return None
    figure, axes = plt.subplots(
        1, len(readouts), figsize=(5.5 * len(readouts), 3.8), squeeze=False, layout="constrained"
    )
    for ax, (name, r) in zip(axes[0], readouts.items(), strict=True):
        values = np.unique(r["truth"])
        for key, label, color, style in READOUT_CURVES:
            if key not in r:
                continue
            error2 = (r[key] - r["truth"]) ** 2
            rms = [np.sqrt(np.nanmean(error2[r["truth"] == v])) for v in values]
            ax.plot(values, rms, color=color, ls=style, marker=".", label=label)
        ax.set_xlabel(f"true {name.replace('_', ' ')}")
        ax.set_ylabel("RMS error")
        ax.set_yscale("log")
    axes[0, -1].legend(fontsize=8, loc="best")
    figure.suptitle("Estimates of the parameters from the latents, against the best possible")
    return _save(figure, path)


def latent_surfaces(a: dict, path: Path) -> Path | None:
    """Fig. 5: mean of each surviving latent over the (alpha, log10 D) grid, as surfaces."""
    if len(a["cell_alpha"]) < 2 or not a["surviving"]:
        return None
    grid_alpha, grid_d = np.meshgrid(a["cell_alpha"], np.log10(a["cell_D"]), indexing="ij")
    figure = plt.figure(figsize=(5 * len(a["surviving"]), 4.2))
    for i, latent in enumerate(a["surviving"]):
        ax = figure.add_subplot(1, len(a["surviving"]), i + 1, projection="3d")
        ax.plot_surface(grid_alpha, grid_d, a["mu_cells"][..., latent], cmap="coolwarm")
        ax.set_xlabel("alpha")
        ax.set_ylabel("log10 D")
        ax.set_zlabel(f"mean latent {latent}")
    return _save(figure, path)


def nll_vs_alpha(a: dict, path: Path) -> Path:
    """Fig. 4: mean NLL per (alpha, D) cell against alpha, coloured by D, with exact_nll."""
    panels = [("model NLL", a["nll_cells"])]
    if "exact_nll_cells" in a:
        panels.append(("exact NLL", a["exact_nll_cells"]))
        panels.append(("model - exact", a["nll_cells"] - a["exact_nll_cells"]))
    figure, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    colours = plt.cm.viridis(np.linspace(0, 1, len(a["cell_D"])))
    for ax, (name, cells) in zip(axes[0], panels, strict=True):
        for j, d in enumerate(a["cell_D"]):
            ax.plot(
                a["cell_alpha"],
                cells[:, j],
                ".-",
                color=colours[j],
                ms=3,
                lw=0.8,
                label=f"D = {d:.2g}" if j % max(1, len(a["cell_D"]) // 6) == 0 else None,
            )
        _shade_training_range(ax, *a["training_range"]["alpha"])
        ax.set_xlabel("alpha")
        ax.set_title(f"{name} (nat per displacement)")
    axes[0, 0].set_ylabel("mean NLL")
    if len(panels) > 1:
        axes[0, 1].sharey(axes[0, 0])
        axes[0, -1].axhline(0, color="k", lw=0.8)
    axes[0, 0].legend(fontsize=7)
    return _save(figure, path)


def fbm_generation(g: dict, path: Path) -> Path:
    """Fig. 3a and 3b: displacement autocorrelation of generated against input trajectories,
    and the exponent alpha_g over sliding windows of lags, with the two insets."""
    figure, axes = plt.subplots(
        1, 4, figsize=(17, 3.8), gridspec_kw={"width_ratios": [1.3, 1.3, 0.8, 0.8]}
    )
    ax = axes[0]
    for k, (alpha, c) in enumerate(g["correlation"].items()):
        colour = f"C{k}"
        lags = np.arange(len(c["generated"]))
        ax.plot(
            lags[1:],
            np.abs(c["generated"][1:]),
            color=colour,
            label=f"generated, alpha {alpha:.2f}",
        )
        ax.plot(lags[1:], np.abs(c["input"][1:]), ".", color=colour, ms=3, label="input")
        ax.plot(lags[1:], np.abs(c["exact"][1:]), ":", color=colour, lw=1)
    ax.axvline(g["receptive_field"], color="k", ls="--", lw=1, label="receptive field")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="lag dt",
        ylabel="|C(dt)|",
        title="Fig. 3a: displacement correlation (dotted: exact)",
    )
    ax.legend(fontsize=6)
    ax = axes[1]
    colours = plt.cm.plasma(np.linspace(0, 0.9, len(g["alphas"])))
    for i in range(len(g["alphas"])):
        ax.plot(g["window_centres"], g["alpha_g"][i], color=colours[i], lw=0.8)
    ax.axvline(g["receptive_field"], color="k", ls="--", lw=1)
    ax.set(
        xscale="log",
        xlabel="lag",
        ylabel="alpha_g",
        title="Fig. 3b: sliding exponent of generated TA-MSD",
    )
    for ax, values, title in (
        (axes[2], g["alpha_g_short"], "lags 1-20"),
        (axes[3], g["alpha_g_long"], f"lags {g['max_lag'] - 20}-{g['max_lag']}"),
    ):
        ax.plot(g["alphas"], values, "o", ms=3)
        ax.plot([0, 2], [0, 2], "k:", lw=1)
        ax.set(xlabel="input alpha", ylabel="alpha_g", title=title, xlim=(0, 2), ylim=(0, 2.2))
    return _save(figure, path)


def sbm_generation(g: dict, path: Path) -> Path:
    """Fig. 3c and 3d: alpha_g from the ageing TEA-MSD against the input alpha for several
    D, and D(t) of generated trajectories against the exact scaling."""
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    for j, d in enumerate(g["D"]):
        ax.plot(g["alphas"], g["alpha_g"][:, j], "o", ms=3, color=f"C{j}", label=f"D = {d:.2g}")
    ax.plot(
        g["alphas"],
        np.nanmean(g["alpha_input"], 1),
        "k-",
        lw=1,
        label="same estimate of the inputs",
    )
    ax.plot([0, 2], [0, 2], "k:", lw=1)
    ax.set(
        xlabel="input alpha", ylabel="alpha_g (TEA-MSD ageing, lag 2, last 55 %)", title="Fig. 3c"
    )
    ax.legend(fontsize=7)
    ax = axes[1]
    for k, (alpha, curves) in enumerate(g["diffusion"].items()):
        t = np.arange(1, len(curves["generated"]) + 1)
        ax.plot(
            t, curves["generated"], color=f"C{k}", lw=0.8, label=f"generated, alpha {alpha:.2f}"
        )
        ax.plot(t, curves["exact"], "k--", lw=1)
    ax.axvline(g["receptive_field"], color="k", ls=":", lw=1, label="generated from here on")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="t (steps)",
        ylabel="D(t) = Var(dx_t) / 2",
        title=f"Fig. 3d: D = {g['D_shown']:.2g} (dashed: exact)",
    )
    ax.legend(fontsize=7)
    return _save(figure, path)


def bm_generation(g: dict, path: Path) -> Path:
    """Generated D against the input's D (label and the same estimate of the input)."""
    figure, ax = plt.subplots(figsize=(4.8, 4.2))
    ax.loglog(g["D_input"], g["D_generated"], ".", ms=2, alpha=0.5, label="per trajectory")
    lims = [min(g["D_label"]) / 3, max(g["D_label"]) * 3]
    ax.plot(lims, lims, "k:", lw=1)
    ax.set(
        xlabel="D of the input trajectory (mean dx^2 / 2)",
        ylabel="D of the generated one",
        title="Brownian motion: generated D",
    )
    return _save(figure, path)


GENERATION_FIGURES = {"fbm": fbm_generation, "sbm": sbm_generation, "bm": bm_generation}


def _table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items())
    return str(value)


def _bayes_text(bayes: dict | None) -> str:
    if not bayes:
        return ""
    return (
        f"; best possible (Bayes posterior mean, exact likelihood) R^2 "
        f"{bayes['decoder_steps']:.4f} from the steps the decoder predicts, "
        f"{bayes['all_steps']:.4f} from all steps"
    )


def write_report(analysis: Analysis, out, title: str = "minrep analysis") -> Path:
    """Figures, ``metrics.json`` and ``index.html`` in ``out``; returns the page's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    m, a = analysis.metrics, analysis.arrays
    figures = [
        (
            latents_vs_parameters(a, out / "fig2_latents.png"),
            "Fig. 2: posterior mean of each surviving latent against alpha and log10 D",
        ),
        (
            readout_errors(a, out / "readout_errors.png"),
            "RMS error of the latent readout against the true value, next to the TA-MSD fit and "
            "the best possible estimate (Bayes posterior mean from the exact likelihood)",
        ),
        (
            latent_surfaces(a, out / "fig5_latent_surfaces.png"),
            "Fig. 5: mean latent over the (alpha, log10 D) grid",
        ),
        (
            nll_vs_alpha(a, out / "fig4_nll.png"),
            "Fig. 4: NLL against alpha, coloured by D, next to the exact NLL",
        ),
    ]
    if "generation" in a:
        process = m["process"]
        figures.append(
            (
                GENERATION_FIGURES[process](a["generation"], out / f"fig3_{process}.png"),
                "Fig. 3: trajectories generated from the encoded test trajectories",
            )
        )
    with io.atomic_write(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(m, indent=2, default=float) + "\n")

    latent_rows = [("surviving latents", _fmt(m["surviving_latents"]))] + [
        (
            f"latent {i}",
            f"KL {m['kl_per_latent'][i]:.3g} nat, Var(mu) {m['var_mu'][i]:.3g}, "
            f"mean log sigma^2 {m['mean_logvar'][i]:.3g}",
        )
        for i in range(len(m["kl_per_latent"]))
    ]
    readout_rows = []
    for name in ("alpha", "log10_D"):
        if f"r2_{name}" in m:
            readout_rows.append(
                (
                    name,
                    f"latent readout R^2 {m[f'r2_{name}']:.4f}, mean |error| "
                    f"{m[f'readout_mae_{name}']:.4f}; TA-MSD fit (lags 1-9) R^2 "
                    f"{m[f'tamsd_r2_{name}']:.4f}, mean |error| {m[f'tamsd_mae_{name}']:.4f}"
                    + _bayes_text(m.get(f"bayes_r2_{name}")),
                )
            )
    readout_rows += [(k.upper(), _fmt(m[k])) for k in ("mig", "dci") if k in m]
    if m.get("extrapolation"):
        readout_rows.append(("D outside the training range (Fig. 2a)", _fmt(m["extrapolation"])))
    nll_rows = [(k, _fmt(m[k])) for k in ("nll_mean", "exact_nll_mean", "nll_gap") if k in m]
    generation_rows = [(k, _fmt(v)) for k, v in m.get("generation", {}).items()]
    sections = [
        (
            "Data",
            _table(
                [
                    ("process", _fmt(m["process"])),
                    ("trajectories", _fmt(m["n"])),
                    (
                        "inside the training range (headline numbers)",
                        _fmt(m["n_in_training_range"]),
                    ),
                    ("training range", _fmt(m["training_range"])),
                ]
            ),
        ),
        ("Latents", _table(latent_rows)),
        ("What the latents encode, against the classical estimate", _table(readout_rows)),
        (
            "Likelihood (nat per predicted displacement, latent at its posterior mean)",
            _table(nll_rows),
        ),
        ("Generated trajectories", _table(generation_rows)),
    ]
    parts = [f"<h2>{html.escape(h)}</h2>{body}" for h, body in sections]
    for path, caption in figures:
        if path is not None:
            parts.append(
                f'<figure><img src="{path.name}" alt="{html.escape(caption)}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:auto}}
table{{border-collapse:collapse}}th,td{{border:1px solid #ccc;padding:3px 8px;text-align:left}}
img{{max-width:100%}}</style></head><body><h1>{html.escape(title)}</h1>
{"".join(parts)}<p>All numbers: <a href="metrics.json">metrics.json</a></p></body></html>
"""
    with io.atomic_write(out / "index.html") as tmp:
        tmp.write_text(page)
    return out / "index.html"
