"""``minrep demo``: a shipped model at work in about a minute on a laptop.

Load a shipped model, simulate a fresh labelled test set of its process (or read the user's
file), encode it, say which latents survive and how well they give alpha and D next to the
classical TA-MSD fit, generate trajectories from a sweep of each surviving latent, and write
the full analysis report.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np

from minrep import checkpoint, datasets, io, processes, stats
from minrep.analysis import YARDSTICKS, analyze
from minrep.encode import EncodingError, encode, encode_axes, save_latents
from minrep.generate import generate_many, generated_set, sweep_latents
from minrep.plots import write_report

SWEEP = np.linspace(-2.5, 2.5, 6)  # latent values, in prior standard deviations


def sweep_table(model, latent: int, per_value: int = 100, seed: int = 0, n_steps: int = 399):
    """Trajectories generated along a sweep of one latent (others at 0), with the TA-MSD fit
    of each value's ensemble over the paper's lags (:data:`minrep.stats.CLASSICAL_LAGS`):
    rows ``(value, alpha, D)`` and the dataset."""
    z = sweep_latents(model, latent, SWEEP, per_value)
    displacements = generate_many(model, z, n_steps, seed=seed, batch_size=600)
    first, last = stats.CLASSICAL_LAGS
    rows = []
    for k, value in enumerate(SWEEP):
        part = displacements[k * per_value : (k + 1) * per_value]
        msd = stats.tea_msd(part, last)[first - 1 :]
        alpha, D = stats.fit_power_law(np.arange(first, last + 1), msd)
        rows.append((float(value), float(alpha), float(D)))
    return rows, generated_set(displacements, z, {"generator": "minrep demo", "seed": seed})


def yardstick(key: str) -> str | None:
    """The line of :data:`minrep.analysis.YARDSTICKS` that says what a good value of metric
    ``key`` is: its own, or that of the kind it belongs to (``tamsd_r2_alpha`` -> ``r2``,
    ``alpha_g_error_lags_1_20`` -> ``alpha_g_error``); None if there is none."""
    for kind, line in YARDSTICKS.items():
        if key == kind or key.startswith(f"{kind}_") or f"_{kind}_" in key:
            return line
    return None


def explain(kind: str, indent: int = 2, width: int = 100) -> list[str]:
    """The yardstick of ``kind`` wrapped to ``width`` columns, indented (none if unknown)."""
    line = yardstick(kind)
    if line is None:
        return []
    pad = " " * indent
    return textwrap.wrap(f"({line})", width, initial_indent=pad, subsequent_indent=pad + " ")


def _value(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_value(v)}" for k, v in value.items())
    if isinstance(value, list) and value and isinstance(value[0], float):
        return ", ".join(f"{v:.2g}" if abs(v) < 100 else f"{v:.0f}" for v in value)
    return str(value)


def metric_lines(metrics: dict, keys=None) -> list[str]:
    """The headline numbers of ``metrics`` as ``name: value`` lines, each group followed once
    by the yardstick that says what a good value is. ``keys``: which top-level metrics (default:
    those ``minrep analyze`` prints); ``generation`` expands to its entries."""
    keys = keys or (
        "surviving_latents",
        "kl_per_latent",
        "effective_dimension",
        "effective_dimension_snr",
        "intrinsic_dimension",
        "r2_alpha",
        "tamsd_r2_alpha",
        "bayes_r2_alpha",
        "r2_log10_D",
        "tamsd_r2_log10_D",
        "bayes_r2_log10_D",
        "mig",
        "dci",
        "nll_mean",
        "exact_nll_mean",
        "nll_gap",
        "generation",
    )
    # Numbers explained by the yardstick of the group they stand in.
    grouped = {
        "surviving_latents": "kl_per_latent",
        "nll_mean": "nll_gap",
        "exact_nll_mean": "nll_gap",
        "effective_dimension_snr": "effective_dimension",
    }
    rows = []  # (name, value, yardstick kind)
    for key in keys:
        if key not in metrics:
            continue
        if key == "generation":
            rows += [(k, v, k) for k, v in metrics[key].items()]
        elif key.startswith("bayes_r2_"):
            rows += [(f"{key} ({steps})", v, "r2") for steps, v in metrics[key].items()]
        else:
            rows.append((key, metrics[key], grouped.get(key, key)))
    if not rows:
        return []
    width = max(len(name) for name, _, _ in rows)
    texts = [yardstick(kind) for _, _, kind in rows]
    lines, explained = [], set()
    for i, (name, value, kind) in enumerate(rows):
        lines.append(f"{name:>{width}}: {_value(value)}")
        last_of_group = i + 1 == len(rows) or texts[i + 1] != texts[i]
        if texts[i] is not None and last_of_group and texts[i] not in explained:
            explained.add(texts[i])
            lines += explain(kind, indent=width + 2)
    return lines


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
    if data is None and process not in processes.PROCESSES:
        raise io.TrajectoryFileError(
            f"{model}: the model's training process is not recorded, so there is no test set "
            "to simulate; give your own trajectories (data, --data)"
        )
    if data is None:
        test = datasets.paper_test_set(
            process, dim=vae.config.dim, training_range=vae.training_range,
            n_per_cell=n_per_cell, seed=seed, progress=True,
        )  # fmt: skip
        measured = "noise" in test.labels or "exposure" in test.labels
        echo(
            f"simulated {len(test)} {process.upper()} trajectories of T = {test.n_steps + 1}"
            + (f" in {test.dim}D" if test.dim > 1 else "")
            + " on the paper's test grid (alpha 0.04-1.96, D 3e-6-3e-2)"
            + (", with localisation error and motion blur as in training" if measured else "")
        )
    else:
        test = io.load(data, min_steps=vae.config.min_steps, on_short="skip")
        if len(test) == 0:
            raise io.TrajectoryFileError(f"{data}: holds no trajectory")
        if test.dim != vae.config.dim and vae.config.dim != 1:
            raise io.TrajectoryFileError(
                f"{data}: the trajectories have dim {test.dim}; model {model} was trained on "
                f"dim {vae.config.dim}"
            )
        if test.alpha is not None and test.D is not None:  # labels the analysis would use
            labelled = test.process if test.process in processes.PROCESSES else None
            datasets.check_labels(test, data, labelled)
        echo(f"read {len(test)} trajectories (dim {test.dim}) from {data}")
    out.mkdir(parents=True, exist_ok=True)
    if test.alpha is None or test.D is None or test.is_ragged or test.dim != vae.config.dim:
        return _unlabelled(vae, test, out, echo, source=data)

    result = analyze(vae, test, seed=seed, generation=generation)
    m = result.metrics
    echo(
        f"\nmodel {model}: surviving latents {m['surviving_latents']} (KL per latent, nat: "
        + ", ".join(f"{v:.2g}" for v in m["kl_per_latent"])
        + ")"
    )
    for line in explain("kl_per_latent"):
        echo(line)
    dimension = ("effective_dimension", "effective_dimension_snr", "intrinsic_dimension")
    for line in metric_lines(m, dimension):
        echo(line)
    if "effective_dimension_note" in m:
        echo(m["effective_dimension_note"])
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
    for line in explain("r2"):
        echo(line)
    if "nll_gap" in m:
        echo(
            f"NLL {m['nll_mean']:.4f} nat per displacement; exact {m['exact_nll_mean']:.4f}; "
            f"gap {m['nll_gap']:+.4f}"
        )
        for line in explain("nll_gap"):
            echo(line)
    others = metric_lines(m, ("mig", "dci", "generation"))
    if others:
        echo("\nmore of the report's numbers (all in metrics.json):")
    for line in others:
        echo(line)
    for latent in m["surviving_latents"]:
        rows, sweep = sweep_table(vae, latent, seed=seed)
        io.save_npz(sweep, out / f"sweep_latent_{latent}.npz")
        echo(f"\ngenerated along latent {latent} (others 0), TA-MSD fit of each ensemble:")
        echo(f"{'z':>6}  {'alpha':>6}  {'D':>9}")
        for value, alpha, D in rows:
            echo(f"{value:6.2f}  {alpha:6.3f}  {D:9.3g}")
    page = write_report(result, out, title=f"minrep demo: shipped model {model}")
    echo(f"\nreport: {page.resolve()}")
    return page


def _unlabelled(vae, data: io.Trajectories, out: Path, echo, source="data") -> Path:
    """A user's file without labels: latents per trajectory (per axis for 2D/3D tracks);
    non-finite latents are refused, naming the first trajectory that gives them."""
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
    bad = ~np.isfinite(mu).all(axis=1)
    if bad.any():
        rows = np.unique(np.flatnonzero(bad) // (len(mu) // len(data)))  # per axis: 2D, 3D
        raise EncodingError(
            f"{source}: {rows.size} trajector{'y' if rows.size == 1 else 'ies'} encode to "
            f"non-finite latents, the first is trajectory {int(rows[0])}; no latents written"
        )
    path = save_latents(latents, data, out / "latents.csv")
    echo(
        "latent means over the file (mean +- std): "
        + ", ".join(
            f"{i}: {mu[:, i].mean():+.2f} +- {mu[:, i].std():.2f}" for i in range(mu.shape[1])
        )
    )
    echo(f"latents: {path.resolve()} (no labels, so no readout or report)")
    return path
