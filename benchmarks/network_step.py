"""One training step of the three decoder networks, interleaved in one process: the paper's
published network (``ModelConfig.published()``), minrep's former stand-in for it (tanh gate,
no scalings) and minrep's scale-equivariant network. Batch 256 of FBM trajectories (T = 400),
forward, loss, backward and Adam, 2 threads; medians and ratios to the published network.

Run by hand: ``python benchmarks/network_step.py [-o out.json]``.
"""

import argparse
import statistics
import time

import torch
from _report import emit

from minrep import datasets
from minrep.model import VAE, ModelConfig


def main(output: str | None, rounds: int = 12, warmup: int = 2) -> None:
    torch.set_num_threads(2)
    data = datasets.make_dataset("fbm", "paper", n_per_cell=2, seed=0)
    x = torch.from_numpy(data.displacements[:256])
    log_scale = float(torch.log(x.pow(2).mean(dim=(1, 2)).sqrt()).mean())
    configs = {
        "published": ModelConfig.published(),
        "tanh_unscaled": ModelConfig(scale_equivariant=False),
        "scale_equivariant": ModelConfig(scale_equivariant=True, log_scale_mean=log_scale),
    }
    torch.manual_seed(0)
    models = {name: VAE(config) for name, config in configs.items()}
    optimizers = {name: torch.optim.Adam(m.parameters(), lr=1e-5) for name, m in models.items()}
    seconds = {name: [] for name in configs}
    for round_ in range(rounds):
        for name, model in models.items():  # interleaved: the machine's noise hits all alike
            start = time.perf_counter()
            loss, _ = model.loss(x, 1e-3)
            optimizers[name].zero_grad()
            loss.backward()
            optimizers[name].step()
            if round_ >= warmup:
                seconds[name].append(time.perf_counter() - start)
    base = statistics.median(seconds["published"])
    emit(
        {
            name: {
                "median_step_seconds": statistics.median(values),
                "ratio_to_published": statistics.median(values) / base,
                "steps": len(values),
            }
            for name, values in seconds.items()
        },
        output,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-o", "--output")
    main(parser.parse_args().output)
