"""Speed of the foundation: simulation, TA-MSD and the exact NLL on the `paper` sets.

Run by hand (not part of the tests): ``python benchmarks/foundation_speed.py [-o out.json]``.
Targets on 2 CPU cores: the `paper` FBM set (99,960 x 399, float32) in <= 30 s; TA-MSD at every
lag of 100k trajectories of 400 positions in <= 10 s; `exact_nll` of the `paper` FBM set in
<= 60 s. Each timing comes with a baseline measured in the same run on a subset (Cholesky
sampling, direct O(T^2) TA-MSD), since this machine is shared and noisy. Also prints the
grid-averaged exact NLL of the `paper` FBM and SBM sets (start = 32).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from unittest import mock

import numpy as np
from _report import emit

from minrep import datasets, processes, stats


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def direct_ta_msd(dx: np.ndarray) -> np.ndarray:
    """Reference TA-MSD: one vectorised difference per lag, O(T^2)."""
    x = stats.positions(dx)
    n_positions = x.shape[-1]
    return np.stack(
        [
            ((x[..., k:] - x[..., :-k]) ** 2).sum(axis=1).mean(axis=-1)
            for k in range(1, n_positions)
        ],
        axis=1,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", help="write the JSON here too")
    parser.add_argument("--subset", type=int, default=4000, help="trajectories for baselines")
    args = parser.parse_args()
    results: dict = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
        },
    }
    grid = datasets.preset_grid("fbm", "paper")
    alpha, D = grid.labels()

    fbm, seconds = timed(processes.simulate, "fbm", alpha, D, grid.n_steps, seed=0)
    sub = slice(0, len(alpha), len(alpha) // args.subset)
    with mock.patch.object(processes, "_circulant_sqrt_eigenvalues", return_value=None):
        _, cholesky = timed(processes.simulate, "fbm", alpha[sub], D[sub], grid.n_steps, seed=0)
    n_sub = alpha[sub].size
    results["simulate_fbm_paper"] = {
        "trajectories": len(alpha),
        "seconds": seconds,
        "target_seconds": 30,
        "cholesky_baseline_seconds_per_trajectory": cholesky / n_sub,
        "speedup_vs_cholesky": (cholesky / n_sub) / (seconds / len(alpha)),
    }

    _, seconds = timed(stats.ta_msd, fbm)
    _, direct = timed(direct_ta_msd, fbm[: args.subset])
    results["ta_msd_all_lags"] = {
        "trajectories": len(fbm),
        "positions": grid.n_positions,
        "seconds": seconds,
        "target_seconds": 10,
        "direct_baseline_seconds_per_trajectory": direct / args.subset,
        "speedup_vs_direct": (direct / args.subset) / (seconds / len(fbm)),
    }

    for process in ("fbm", "sbm"):
        data = (
            fbm if process == "fbm" else processes.simulate("sbm", alpha, D, grid.n_steps, seed=0)
        )
        entry = {}
        for memory in (None, 32):
            nll, seconds = timed(
                processes.exact_nll, data, process, alpha, D, start=32, memory=memory
            )
            expected = processes.expected_exact_nll(process, alpha, D, grid.n_steps, 32, memory)
            key = "memory_all" if memory is None else "memory_32"
            entry[key] = {
                "seconds": seconds,
                "mean_nll": float(nll.mean()),
                "standard_error": float(nll.std(ddof=1) / np.sqrt(nll.size)),
                "expected_mean_nll": float(expected.mean()),
            }
        results[f"exact_nll_{process}_paper"] = entry
    emit(results, args.output)


if __name__ == "__main__":
    main()
