"""How good are `minrep estimate`'s alpha and D, by track length? (issue 11, point 4)

For a shipped model (default fbm): fresh tracks of the training range (uniform alpha and log10 D)
at a few lengths; for each length, the root-mean-square error of alpha and log10 D of
minrep's estimate, of the best possible estimate (`stats.bayes_estimate` from all steps: the
posterior mean under the same uniform prior and the exact likelihood) and of the TA-MSD fit,
and the coverage of minrep's 90 % intervals. For a model trained with a measurement (noise and
exposure drawn over its training ranges), the best possible estimate is given the true noise
and exposure of each track (the error as drawn, relative to the motion: a bound no
estimator that must also find them reaches; beside it the best possible estimate that is not
told them, `stats.bayes_estimate_measurement_unknown`, the bound minrep can reach), the TA-MSD
fit ignores them (exposures on the midpoints of 21 equal bins of the range, a discrete
uniform prior like the continuous one of training and calibration, each level a decomposition
for the best possible estimate; levels that include the range's ends give each end twice a
uniform prior's weight, and the ends are where an interval of the hardly identifiable
exposure misses), and the RMS errors and coverage of minrep's noise and exposure are reported
too. Lengths from 20 positions where the model encodes them. For a model trained with a
measurement, also free diffusion as a microscope records it (alpha = 1, full-frame exposure,
localisation error of reduced size sigma^2 / (2 D dt) = 0.1, 0.3, 1): the median alpha and
D / D_true. Writes docs/results/estimate_accuracy_<model>.json (a run directory: its name) with
the ratios issue 11 sets bars for (mean absolute error of alpha against the TA-MSD fit's, at most
0.8, and against the best possible at 100 positions, at most 1.3).

    python scripts/estimate_accuracy.py [--model fbm] [--n 1000]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from minrep import estimation, io, stats

POSITIONS = (20, 50, 100, 400)  # track lengths T (T - 1 displacements), those the model takes


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fbm")
    parser.add_argument("--n", type=int, default=1000, help="tracks per length")
    parser.add_argument("--seed", type=int, default=21)
    args = parser.parse_args(argv)
    model, calibration = estimation.model_calibration(args.model)
    process = calibration.process
    low, high = calibration.training_range["alpha"]
    d_range = calibration.training_range["D"]
    rng = np.random.default_rng(args.seed)
    ranges = calibration.training_range
    rows = []
    for positions in (p for p in POSITIONS if p - 1 >= model.config.min_steps):
        alpha = rng.uniform(low, high, args.n)
        log10_d = rng.uniform(*np.log10(d_range), args.n)
        D = 10**log10_d
        reduced_noise = rng.uniform(*ranges.get("reduced_noise", (0.0, 0.0)), args.n)
        noise = np.sqrt(2 * reduced_noise * D)
        # on 21 levels: the best possible estimate costs one decomposition per exposure
        low_f, high_f = ranges.get("exposure", (0.0, 0.0))
        exposure = low_f + (high_f - low_f) * (rng.integers(0, 21, args.n) + 0.5) / 21
        n_steps = np.full(args.n, positions - 1)
        dim = model.config.dim
        tracks = estimation._simulate(process, alpha, D, n_steps, dim, rng, noise, exposure)
        table = estimation.estimate(model, tracks, calibration)
        bayes = stats.bayes_estimate(
            tracks.displacements, process, (low, high), tuple(d_range),
            reduced_noise=reduced_noise, exposure=exposure,
        )  # fmt: skip
        tamsd_alpha, tamsd_d = stats.estimate_alpha_D(tracks.displacements)
        unknown = {}
        if "exposure" in ranges and "reduced_noise" in ranges:  # the bound minrep can reach
            unknown["best_possible_measurement_unknown"] = stats.bayes_estimate_measurement_unknown(
                tracks.displacements, process, (low, high), tuple(d_range),
                reduced_noise_range=tuple(ranges["reduced_noise"]),
                exposure_range=tuple(ranges["exposure"]),
            )  # fmt: skip
        row = {"positions": positions, "n": args.n}
        estimates = {
            "minrep": (table["alpha"].to_numpy(), np.log10(table["D"].to_numpy())),
            "best_possible": bayes,
            "ta_msd": (tamsd_alpha, np.log10(tamsd_d)),
            **unknown,
        }
        for name, (a, d) in estimates.items():
            row[f"rmse_alpha_{name}"] = float(np.sqrt(np.mean((a - alpha) ** 2)))
            row[f"rmse_log10_D_{name}"] = float(np.sqrt(np.mean((d - log10_d) ** 2)))
            row[f"mae_alpha_{name}"] = float(np.mean(np.abs(a - alpha)))
            row[f"mae_log10_D_{name}"] = float(np.mean(np.abs(d - log10_d)))
        if process != "bm":  # BM's alpha is 1 by assumption: no error, no ratio
            row["mae_alpha_ratio_ta_msd"] = row["mae_alpha_minrep"] / row["mae_alpha_ta_msd"]
            for bound in ("best_possible", *unknown):
                row[f"mae_alpha_ratio_{bound}"] = (
                    row["mae_alpha_minrep"] / row[f"mae_alpha_{bound}"]
                )
        truths = {"alpha": alpha, "D": D, "noise": noise, "exposure": exposure}
        for name, truth in truths.items():
            if name not in table:
                continue
            inside = (table[f"{name}_low"] <= truth) & (truth <= table[f"{name}_high"])
            row[f"coverage_{name}"] = float(inside.mean())
            if name in ("noise", "exposure"):
                row[f"rmse_{name}_minrep"] = float(np.sqrt(np.mean((table[name] - truth) ** 2)))
        rows.append(row)
        print(json.dumps(row), flush=True)
    free = free_diffusion(model, calibration, rng, args.n)
    out = Path("docs/results") / f"estimate_accuracy_{Path(args.model).name}.json"
    document = {"model": args.model, "process": process, "level": calibration.level, "rows": rows}
    if free:
        document["free_diffusion"] = free
    with io.atomic_write(out) as tmp:
        tmp.write_text(json.dumps(document, indent=2) + "\n")


def free_diffusion(model, calibration, rng, n: int) -> list[dict]:
    """Median estimates on free diffusion (alpha = 1) with full-frame exposure and localisation
    error, D in the middle of the training range (tracks are rescaled before encoding, so the
    estimates do not depend on where); none for a model not trained with full-frame blur, and
    only errors inside its training range."""
    ranges = calibration.training_range
    if ranges.get("exposure", [0.0, 0.0])[1] < 0.99:
        return []
    D = 10 ** np.mean(np.log10(ranges["D"]))
    rows = []
    for positions in (p for p in POSITIONS if p - 1 >= model.config.min_steps):
        for reduced_noise in (0.1, 0.3, 1.0):
            if reduced_noise > ranges.get("reduced_noise", [0.0, 0.0])[1] * 1.01:
                continue
            noise = np.full(n, np.sqrt(2 * reduced_noise * D))
            n_steps = np.full(n, positions - 1)
            tracks = estimation._simulate(
                calibration.process, np.ones(n), np.full(n, D), n_steps, model.config.dim, rng,
                noise, np.ones(n),
            )  # fmt: skip
            table = estimation.estimate(model, tracks, calibration)
            row = {
                "positions": positions,
                "reduced_noise": reduced_noise,
                "n": n,
                "median_alpha": float(np.median(table["alpha"])),
                "median_D_ratio": float(np.median(table["D"]) / D),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


if __name__ == "__main__":
    main()
