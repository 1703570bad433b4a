"""How close can any estimator come to alpha = 1 and D on free diffusion recorded with blur and
localisation error it does not know? (issue 11)

Tracks of free diffusion (2D, alpha = 1, full-frame exposure, reduced error r = sigma^2 / (2 D)
of 0.1, 0.3 and 1) are given to the exact Bayes posterior mean under the priors the models are
trained on (alpha uniform on 0.2-1.8, log10 D uniform on -5..-2, r uniform on 0-1 and, unless
--exposure-known, the exposure uniform on 0-1; r and the exposure on grids of 11 and 6
values), the likelihood exact (`minrep.stats.bayes_estimate_measurement_unknown`). The median
estimates say how close the best possible estimator that must also find the measurement comes
to alpha = 1 and the true D.

    python scripts/free_diffusion_bound.py --positions 100 [--exposure-known] [--n 300]
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from minrep import processes, stats


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, default=100)
    parser.add_argument("--n", type=int, default=300, help="tracks per error size")
    parser.add_argument("--exposure-known", action="store_true")
    args = parser.parse_args(argv)
    n, length = args.n, args.positions - 1
    D = 10**-3.5
    for r_true in (0.1, 0.3, 1.0):
        noise = np.full(n, np.sqrt(2 * r_true * D))
        dx = processes.simulate(
            "fbm", np.ones(n), D, length, dim=2, seed=int(10 * r_true), noise=noise,
            exposure=np.ones(n), dtype=np.float64,
        )  # fmt: skip
        alpha_hat, log10_d_hat = stats.bayes_estimate_measurement_unknown(
            dx, "fbm", (0.2, 1.8), (1e-5, 1e-2), n_reduced_noise=11,
            exposure_range=(1.0, 1.0) if args.exposure_known else (0.0, 1.0),
            n_exposure=1 if args.exposure_known else 6,
        )  # fmt: skip
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
