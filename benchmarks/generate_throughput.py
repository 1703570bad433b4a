"""Generation throughput: displacements per second, incremental sampler against the naive one.

Run by hand from the repository root: ``python benchmarks/generate_throughput.py [-o out.json]``.
Batches of 100 and 600 trajectories, T' = 400 and 6000 generated displacements, 2 threads. The
naive sampler (``tests/test_generate.py``, the paper's approach: the whole receptive-field
window through the decoder at every step) runs in the same process on the same model. For
scale (the issue): the paper's sampler reaches about 60,000 displacements/s at batch 100 and
65,000-130,000 at batch 600 on this machine kind; the target is 1,000,000 at batch 600.

``--whole MODEL`` adds the same runs for a model with the ``"whole"`` decoder (generation from
nothing, memories of the whole past): its rate, its ratio to the window model's incremental
sampler in the same run, and its cost per displacement at T' = 6000 against T' = 400 (issue
10: at most 1.1x; at least 800,000 displacements/s at batch 600 on 2 cores). Its naive
reference costs O(T'^2) and is not run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _report import emit

from minrep import generate
from minrep.checkpoint import load_model


def reference_sampler():
    tests = Path(__file__).resolve().parents[1] / "tests"
    sys.path.insert(0, str(tests))  # the tests' own helper modules
    path = tests / "test_generate.py"
    spec = importlib.util.spec_from_file_location("reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.naive_generate


def whole_runs(model, window_rows: list[dict]) -> list[dict]:
    """The whole-decoder model's rates at the window runs' sizes, as ratios to them."""
    rows = []
    for window in window_rows:
        batch, n_steps = window["batch"], window["n_steps"]
        z = np.random.default_rng(0).standard_normal((batch, model.config.latent_dim))
        noise = generate.draw_noise(model, batch, n_steps, torch.Generator().manual_seed(1))
        start = time.perf_counter()
        generate.generate(model, z.astype(np.float32), n_steps, noise=noise)
        rate = batch * n_steps / (time.perf_counter() - start)
        window_rate = window["incremental_displacements_per_second"]
        rows.append(
            {
                "batch": batch,
                "n_steps": n_steps,
                "displacements_per_second": rate,
                "ratio_to_window_incremental": rate / window_rate,
            }
        )
        print(json.dumps(rows[-1]))
    for row in rows:  # cost per displacement against the shortest length at the same batch
        short = next(r for r in rows if r["batch"] == row["batch"] and r["n_steps"] == 400)
        row["cost_per_displacement_vs_400"] = (
            short["displacements_per_second"] / row["displacements_per_second"]
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default="fbm", help="model path or shipped name (default: fbm)")
    parser.add_argument("--whole", help="a model with the whole decoder (path or shipped name)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    # A trained network: with the default start the output layer is zero and the two samplers
    # agree trivially.
    model = load_model(args.model)
    naive = reference_sampler()
    rows = []
    for batch in (100, 600):
        for n_steps in (400, 6000):
            z = np.random.default_rng(0).standard_normal((batch, 6)).astype(np.float32)
            context = np.zeros((batch, 1, model.receptive_field), np.float32)
            noise = generate.draw_noise(model, batch, n_steps, torch.Generator().manual_seed(1))
            start = time.perf_counter()
            fast = generate.generate(model, z, n_steps, context=context, noise=noise)
            fast_seconds = time.perf_counter() - start
            start = time.perf_counter()
            slow = naive(model, torch.from_numpy(z), n_steps, torch.from_numpy(context), noise)
            slow_seconds = time.perf_counter() - start
            scale = float(np.abs(slow).max())
            rows.append(
                {
                    "batch": batch,
                    "n_steps": n_steps,
                    "incremental_displacements_per_second": batch * n_steps / fast_seconds,
                    "naive_displacements_per_second": batch * n_steps / slow_seconds,
                    "speedup": slow_seconds / fast_seconds,
                    "max_abs_difference_over_scale": float(np.abs(fast - slow).max()) / scale,
                }
            )
            print(json.dumps(rows[-1]))
    results = {
        "machine": {"cpus": os.cpu_count(), "threads": args.threads, "torch": torch.__version__},
        "model": args.model,
        "runs": rows,
    }
    if args.whole:
        results["whole"] = whole_runs(load_model(args.whole), rows)
        results["whole_model"] = args.whole
    emit(results, args.output)


if __name__ == "__main__":
    main()
