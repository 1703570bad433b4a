"""``minrep demo``: a shipped model at work in about a minute on a laptop.

Load a shipped model, simulate a fresh labelled test set of its process (or read the user's
file), encode it, say which latents survive and how well they give alpha and D next to the
classical TA-MSD fit, generate trajectories from a sweep of each surviving latent, and write
the full analysis report.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from minrep import checkpoint, datasets, io, stats
from minrep.analysis import analyze
from minrep.encode import encode, encode_axes, save_latents
from minrep.generate import generate_many, generated_set, sweep_latents
from minrep.plots import write_report

SWEEP = np.linspace(-2.5, 2.5, 6)  # latent values, in prior standard deviations


def sweep_table(model, latent: int, per_value: int = 100, seed: int = 0):
    """Trajectories generated along a sweep of one latent (others at 0), with the TA-MSD fit
    (lags 1-9) of each value's ensemble: rows ``(value, alpha, D)`` and the dataset."""
    z = sweep_latents(model, latent, SWEEP, per_value)
    displacements = generate_many(model, z, 399, seed=seed, batch_size=600)
    rows = []
    for k, value in enumerate(SWEEP):
        part = displacements[k * per_value : (k + 1) * per_value]
        msd = stats.ta_msd(part, 9).mean(axis=0)
        alpha, D = stats.fit_power_law(np.arange(1, 10), msd)  # noqa: N806
        rows.append((float(value), float(alpha), float(D)))
    return rows, generated_set(displacements, z, {"generator": "minrep demo", "seed": seed})


def run_demo(
    model: str = "fbm",
    out: Path | str = "minrep-demo",
    data: Path | str | None = None,
    n_per_cell: int = 4,
    seed: int = 0,
    echo: Callable[[str], None] = print,
    generation: dict | None = None,
) -> Path:
    """The whole demo; returns the path of the report's ``index.html`` (or, for a file
    without labels, of its latents). ``generation`` overrides the sizes of the generated
    sets of the analysis (see :mod:`minrep.analysis`)."""
    out = Path(out)
    vae = checkpoint.load_model(model)
    process = checkpoint.read_config(model).get("data", {}).get("process")
    if data is None:
        test = datasets.make_dataset(
            process, "paper-test", n_per_cell=n_per_cell, seed=seed, progress=True
        )
        echo(
            f"simulated {len(test)} {process.upper()} trajectories of T = {test.n_steps + 1} "
            "on the paper's test grid (alpha 0.04-1.96, D 3e-6-3e-2)"
        )
    else:
        test = io.load(data, min_steps=vae.config.min_steps, on_short="skip")
        echo(f"read {len(test)} trajectories (dim {test.dim}) from {data}")
    out.mkdir(parents=True, exist_ok=True)
    if test.alpha is None or test.D is None or test.is_ragged or test.dim != vae.config.dim:
        return _unlabelled(vae, test, out, echo)

    result = analyze(vae, test, seed=seed, generation=generation)
    m = result.metrics
    echo(
        f"\nmodel {model}: surviving latents {m['surviving_latents']} (KL per latent, nat: "
        + ", ".join(f"{v:.2g}" for v in m["kl_per_latent"])
        + ")"
    )
    echo(
        f"{'':>10}  {'latent readout R^2':>18}  {'TA-MSD fit R^2':>14}  {'best possible R^2':>17}"
        "   (inside the training range; best: Bayes, exact likelihood)"
    )
    for name in ("alpha", "log10_D"):
        if f"r2_{name}" in m:
            best = m.get(f"bayes_r2_{name}", {}).get("all_steps", float("nan"))
            echo(
                f"{name:>10}  {m[f'r2_{name}']:18.3f}  {m[f'tamsd_r2_{name}']:14.3f}  {best:17.3f}"
            )
    if "nll_gap" in m:
        echo(
            f"NLL {m['nll_mean']:.4f} nat per displacement; exact {m['exact_nll_mean']:.4f}; "
            f"gap {m['nll_gap']:+.4f}"
        )
    for latent in m["surviving_latents"]:
        rows, sweep = sweep_table(vae, latent, seed=seed)
        io.save_npz(sweep, out / f"sweep_latent_{latent}.npz")
        echo(f"\ngenerated along latent {latent} (others 0), TA-MSD fit of each ensemble:")
        echo(f"{'z':>6}  {'alpha':>6}  {'D':>9}")
        for value, alpha, D in rows:  # noqa: N806
            echo(f"{value:6.2f}  {alpha:6.3f}  {D:9.3g}")
    page = write_report(result, out, title=f"minrep demo: shipped model {model}")
    echo(f"\nreport: {page.resolve()}")
    return page


def _unlabelled(vae, data: io.Trajectories, out: Path, echo) -> Path:
    """A user's file without labels: latents per trajectory (per axis for 2D/3D tracks)."""
    if vae.config.dim == 1 and data.dim > 1:
        latents = encode_axes(vae, data, progress=True)
        echo(
            f"the model is 1D and the tracks {data.dim}D: each axis encoded as a 1D "
            f"trajectory; the axes agree for {latents['axes_agree'].sum()} of {len(data)}"
        )
        mu = latents["mu"].reshape(-1, vae.config.latent_dim)
    else:
        latents = encode(vae, data, progress=True)
        mu = latents["mu"]
    path = save_latents(latents, data, out / "latents.csv")
    echo(
        "latent means over the file (mean +- std): "
        + ", ".join(
            f"{i}: {mu[:, i].mean():+.2f} +- {mu[:, i].std():.2f}" for i in range(mu.shape[1])
        )
    )
    echo(f"latents: {path.resolve()} (no labels, so no readout or report)")
    return path
