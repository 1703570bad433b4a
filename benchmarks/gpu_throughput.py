"""Training and generation throughput on a GPU, and CPU/GPU agreement of generation.

Run by hand on a machine with CUDA: ``python benchmarks/gpu_throughput.py [-o out.json]``.
One training step (forward, loss, backward, Adam) of minrep's default network at batch 256
and 1024, T = 400; generation from the shipped FBM model at batch 600 and 10,000 for
T' = 400 and 6,000; and the largest relative difference between trajectories generated on
the GPU and on the CPU from the same random numbers.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _report import emit

import minrep
from minrep import datasets, generate
from minrep.model import VAE, ModelConfig


def timed(fn, repeats: int) -> float:
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output")
    args = parser.parse_args()
    device = torch.device("cuda")
    data = datasets.make_dataset("fbm", "paper", n_per_cell=5, seed=0)
    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}

    for batch_size in (256, 1024):
        batch = torch.from_numpy(data.displacements[:batch_size]).to(device)
        config = ModelConfig(scale_equivariant=True, log_scale_mean=-3.7)
        model = VAE(config).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

        def step(model=model, batch=batch, optimizer=optimizer):
            loss, _ = model.loss(batch, 1e-3)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        seconds = timed(step, 50)
        results[f"train_step_batch_{batch_size}"] = {
            "seconds_per_step": seconds,
            "trajectories_per_second": batch_size / seconds,
        }

    cpu_model = minrep.load_model("fbm")
    gpu_model = minrep.load_model("fbm", device=device)
    z = np.random.default_rng(0).standard_normal((64, 6)).astype(np.float32)
    on_cpu = generate.generate(cpu_model, z, 500, seed=3)
    on_gpu = generate.generate(gpu_model, z, 500, seed=3)
    results["cpu_gpu_max_relative_difference"] = float(
        np.abs(on_gpu - on_cpu).max() / np.abs(on_cpu).max()
    )
    for batch_size in (600, 10_000):
        zb = np.random.default_rng(1).standard_normal((batch_size, 6)).astype(np.float32)
        for n_steps in (400, 6000):
            seconds = timed(
                lambda zb=zb, n_steps=n_steps: generate.generate(gpu_model, zb, n_steps, seed=1), 1
            )
            results[f"generate_batch_{batch_size}_T_{n_steps}"] = {
                "seconds": seconds,
                "displacements_per_second": batch_size * n_steps / seconds,
            }
    emit(results, args.output)


if __name__ == "__main__":
    main()
