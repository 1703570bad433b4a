"""How close can any estimator come to alpha = 1 and D on free diffusion recorded with blur and
localisation error it does not know? (issue 11)

Tracks of free diffusion (2D, alpha = 1, full-frame exposure, reduced error r = sigma^2 / (2 D)
of 0.1, 0.3 and 1) are given to the exact Bayes posterior mean under the priors the models are
trained on (alpha uniform on 0.2-1.8, log10 D uniform on -5..-2, r uniform on 0-1 and, unless
--exposure-known, the exposure uniform on 0-1; r and the exposure on grids of 11 and 6
values), the likelihood exact (`minrep.stats`). The median estimates say how close the best
possible estimator that must also find the measurement comes to alpha = 1 and the true D.

    python scripts/free_diffusion_bound.py --positions 100 [--exposure-known] [--n 300]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from scipy.special import logsumexp

from minrep import processes, stats


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, default=100)
    parser.add_argument("--n", type=int, default=300, help="tracks per error size")
    parser.add_argument("--exposure-known", action="store_true")
    args = parser.parse_args(argv)
    n, length = args.n, args.positions - 1
    alphas, log10_d = np.linspace(0.2, 1.8, 41), np.linspace(-5, -2, 151)
    errors = np.linspace(1e-9, 1.0, 11)  # reduced error r (0 as 1e-9: the grid's relative form)
    exposures = np.array([1.0]) if args.exposure_known else np.linspace(0.0, 1.0, 6)
    D = 10**-3.5
    for r_true in (0.1, 0.3, 1.0):
        noise = np.full(n, np.sqrt(2 * r_true * D))
        dx = processes.simulate(
            "fbm", np.ones(n), D, length, dim=2, seed=int(10 * r_true), noise=noise,
            exposure=np.ones(n), dtype=np.float64,
        )  # fmt: skip
        evidence, mean_log10_d = [], []  # per (r, f): (n, n_alpha) each
        for r in errors:
            for f in exposures:
                e, m = stats._measured_evidence(
                    dx, "fbm", alphas, log10_d, np.full(n, r), np.full(n, f), 0, False, True
                )
                evidence.append(e)
                mean_log10_d.append(m)
        evidence, mean_log10_d = np.stack(evidence), np.stack(mean_log10_d)
        per_alpha = logsumexp(evidence, axis=0)  # uniform priors on the grids of r and f
        posterior = np.exp(per_alpha - per_alpha.max(axis=1, keepdims=True))
        posterior /= posterior.sum(axis=1, keepdims=True)
        given_alpha = (np.exp(evidence - per_alpha[None]) * mean_log10_d).sum(axis=0)
        alpha_hat, log10_d_hat = posterior @ alphas, (posterior * given_alpha).sum(axis=1)
        row = {
            "positions": args.positions,
            "reduced_noise": r_true,
            "exposure_known": args.exposure_known,
            "n": n,
            "median_alpha": float(np.median(alpha_hat)),
            "median_D_ratio": float(np.median(10**log10_d_hat) / D),
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
