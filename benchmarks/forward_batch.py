"""Forward passes without gradient (validation, ``model_nll``, ``encode``) on the CPU: seconds
per 1,000 trajectories by batch size, for the whole network (encoder and decoder, the
posterior mean as the latent) and the encoder alone. 2,048 FBM trajectories (T = 400),
minrep's network, glibc keeping freed memory as ``minrep train`` does; batch sizes
interleaved in one process, medians over rounds, ratios to the batch of 1,024 (the former
default). Sets :data:`minrep.model.CPU_FORWARD_BATCH`.

Run by hand, alone on the machine:
``python benchmarks/forward_batch.py [--threads 2] [-o out.json]``.
"""

import argparse
import os
import platform
import statistics
import time

import torch
from _report import emit

from minrep import datasets, train
from minrep.model import VAE, ModelConfig

SIZES = (2048, 1024, 512, 256, 128, 64)
N = 2048


def main(output: str | None, threads: int, rounds: int) -> None:
    train.keep_freed_memory()
    torch.set_num_threads(threads)
    data = datasets.make_dataset("fbm", "paper", n_per_cell=10, seed=0)
    x = torch.from_numpy(data.displacements[:N])
    log_scale = float(torch.log(x.pow(2).mean(dim=(1, 2)).sqrt()).mean())
    torch.manual_seed(0)
    model = VAE(ModelConfig(scale_equivariant=True, log_scale_mean=log_scale)).eval()
    passes = {
        "whole_network": lambda b: model(b, sample=False),
        "encoder": model.encode,
    }
    seconds = {(name, size): [] for name in passes for size in SIZES}
    with torch.no_grad():
        for _ in range(rounds):
            for (name, size), times in seconds.items():
                start = time.perf_counter()
                for lo in range(0, N, size):
                    passes[name](x[lo : lo + size])
                times.append((time.perf_counter() - start) * 1000 / N)
    results = {
        "benchmark": "forward_batch",
        "machine": {"processor": platform.processor(), "cpus": os.cpu_count()},
        "threads": threads,
        "rounds": rounds,
        "unit": "seconds per 1,000 trajectories (median over rounds)",
    }
    for name in passes:
        medians = {size: statistics.median(seconds[(name, size)]) for size in SIZES}
        results[name] = {
            str(size): {"seconds": medians[size], "speed_vs_1024": medians[1024] / medians[size]}
            for size in SIZES
        }
    emit(results, output)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    main(args.output, args.threads, args.rounds)
