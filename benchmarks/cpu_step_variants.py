"""Two ways to a faster CPU training step that issue 13 names, measured against the plain one.

    python benchmarks/cpu_step_variants.py [-o out.json] [--threads 1]

- ``compile``: minrep's network, one training step (forward, loss, backward, Adam) at batch 256
  of FBM trajectories (T = 400), eager against ``torch.compile`` of the loss (inductor, C++
  kernels: fuses the gates' elementwise products), interleaved, the same weights and noise.
- ``dilated_convolution``: one gated block's dilated causal convolution (16 -> 32 channels,
  kernel 2, dilation 4) forward and backward as ``Conv1d`` (channels first, oneDNN) against
  the same arithmetic as matrix products over (batch x time, channels) in a channels-last
  layout: two products, or one on the two shifted inputs side by side.

Medians after warm-up; ratios are plain time over variant time (above 1: the variant is
faster). Interleaved in one process, so the machine's load hits every variant alike.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _report import emit

from minrep import datasets
from minrep.model import VAE, ModelConfig


def interleaved(functions: dict, rounds: int, warmup: int) -> dict[str, float]:
    seconds = {name: [] for name in functions}
    for round_ in range(rounds):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            if round_ >= warmup:
                seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in seconds.items()}


def compile_step(rounds: int) -> dict:
    data = datasets.make_dataset("fbm", "paper", n_per_cell=2, seed=0)
    x = torch.from_numpy(data.displacements[:256])
    log_scale = float(torch.log(x.pow(2).mean(dim=(1, 2)).sqrt()).mean())
    config = ModelConfig(scale_equivariant=True, log_scale_mean=log_scale)
    steps, losses = {}, {}
    for name in ("eager", "compiled"):
        torch.manual_seed(0)
        model = VAE(config)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
        loss_of = lambda x, model=model: model.loss(x, 1e-3)[0]  # noqa: E731
        if name == "compiled":
            loss_of = torch.compile(loss_of)
        start = time.perf_counter()
        torch.manual_seed(1)
        losses[name] = loss_of(x).item()
        losses[f"{name}_first_call_seconds"] = time.perf_counter() - start

        def step(loss_of=loss_of, optimizer=optimizer):
            loss = loss_of(x)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        steps[name] = step
    median = interleaved(steps, rounds, warmup=2)
    return {
        "median_step_seconds": median,
        "speed_up": median["eager"] / median["compiled"],
        "first_loss": losses,
    }


def dilated_convolution(rounds: int, batch=256, channels=16, length=400, dilation=4) -> dict:
    convolution = torch.nn.Conv1d(channels, 2 * channels, 2, dilation=dilation)
    first_layout = torch.randn(batch, channels, length + dilation, requires_grad=True)
    last_layout = first_layout.detach().transpose(1, 2).contiguous().requires_grad_()
    weight = convolution.weight.detach()
    w_old = weight[:, :, 0].T.contiguous().requires_grad_()
    w_new = weight[:, :, 1].T.contiguous().requires_grad_()
    bias = convolution.bias.detach().requires_grad_()

    def conv1d():
        convolution(first_layout).sum().backward()

    def two_products():
        old = last_layout[:, :-dilation].reshape(-1, channels)
        y = torch.addmm(bias, old, w_old).view(batch, length, 2 * channels)
        (y + last_layout[:, dilation:] @ w_new).sum().backward()

    def one_product():
        both = torch.cat([last_layout[:, :-dilation], last_layout[:, dilation:]], dim=-1)
        y = torch.addmm(bias, both.reshape(-1, 2 * channels), torch.cat([w_old, w_new]))
        y.sum().backward()

    with torch.no_grad():  # the same function: checked once
        reference = convolution(first_layout).transpose(1, 2)
        old = last_layout[:, :-dilation] @ w_old
        difference = (old + last_layout[:, dilation:] @ w_new + bias - reference).abs().max()
    median = interleaved(
        {"conv1d": conv1d, "two_products": two_products, "one_product": one_product},
        rounds,
        warmup=3,
    )
    return {
        "median_seconds": median,
        "speed_up": {k: median["conv1d"] / v for k, v in median.items() if k != "conv1d"},
        "max_abs_difference": float(difference),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=12)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {
        "threads": args.threads,
        "torch": torch.__version__,
        "compile": compile_step(args.rounds),
        "dilated_convolution": dilated_convolution(3 * args.rounds),
    }
    emit(results, args.output)


if __name__ == "__main__":
    main()
