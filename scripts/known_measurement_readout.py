"""Could a readout that is told the measurement reach the best possible estimate? (issue 11)

`minrep estimate fbm-2d` must find each track's localisation error and exposure from the track
itself. A user often knows both (the camera's exposure over its frame interval; the error
from immobilised beads). This fits the calibration's polynomial for alpha on fresh tracks of
one length, with the features it has (the surviving latents' posterior means, the
displacement autocorrelation at :data:`minrep.estimation.MEASUREMENT_LAGS`) and with the true
exposure and error (over the track's RMS displacement) added; degree by cross-validation, half
the tracks to fit, the other half to score. Prints the mean absolute error of alpha of each, to
set beside the best possible estimate given the measurement in
docs/results/estimate_accuracy_fbm-2d.json (0.084 at 100 positions).

    python scripts/known_measurement_readout.py [--model fbm-2d] [--n 20000] [--positions 100]
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from minrep import estimation
from minrep.analysis import choose_degree, polynomial_features
from minrep.encode import encode


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fbm-2d")
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--positions", type=int, default=100)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args(argv)
    model, calibration = estimation.model_calibration(args.model)
    ranges = calibration.training_range
    rng = np.random.default_rng(args.seed)
    n, steps = args.n, args.positions - 1
    alpha = rng.uniform(*ranges["alpha"], n)
    D = 10 ** rng.uniform(*np.log10(ranges["D"]), n)
    exposure = rng.uniform(*ranges["exposure"], n)
    noise = np.sqrt(2 * rng.uniform(*ranges["reduced_noise"], n) * D)
    tracks = estimation._simulate(
        "fbm", alpha, D, np.full(n, steps), model.config.dim, rng, noise=noise, exposure=exposure
    )
    scaled, _ = estimation._rescaled(tracks, calibration.reference_log_rms)
    mu = encode(model, scaled, progress=True)["mu"][:, calibration.latents]
    found = np.column_stack([mu, estimation._correlations(tracks, estimation.MEASUREMENT_LAGS)])
    noise_ratio = noise / estimation._rms(tracks)
    feature_sets = {
        "latents and autocorrelations (what minrep estimate uses)": found,
        "and the exposure": np.column_stack([found, exposure]),
        "and the exposure and the error": np.column_stack([found, exposure, noise_ratio]),
    }
    half = n // 2
    results = {"model": args.model, "positions": args.positions, "tracks": n, "alpha_mae": {}}
    for name, raw in feature_sets.items():
        x = (raw - raw.mean(axis=0)) / raw.std(axis=0)
        degree = choose_degree(x[:half], alpha[:half], args.seed)
        design = polynomial_features(x, degree)
        weights, *_ = np.linalg.lstsq(design[:half], alpha[:half], rcond=None)
        error = float(np.abs(design[half:] @ weights - alpha[half:]).mean())
        results["alpha_mae"][name] = {"degree": int(degree), "mae": error}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
