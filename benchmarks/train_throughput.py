"""Training throughput on the CPU: trajectories per second for one training step and per epoch.

Run by hand: ``python benchmarks/train_throughput.py [-o out.json]``. One step is forward, loss,
backward and Adam for the paper's configuration (batch 256, T = 400 positions) on 2 threads.
Each configuration runs in a fresh process (the allocator setting cannot be undone), in turn,
``--rounds`` times; the medians and their ratios to the first (the paper's network as a plain
PyTorch loop would run it) are reported, since this machine is shared and noisy:

- ``paper_network``: the network of the paper's published code (``ModelConfig.published()``;
  results before 2026-11-27 used minrep's former stand-in, tanh gate without the scalings),
  1 process x 2 threads, default allocator;
- ``minrep_default_allocator``: minrep's network, 1 process x 2 threads, default allocator;
- ``minrep``: the same with :func:`minrep.train.keep_freed_memory` (what ``minrep train`` does);
- ``minrep_ddp``: 2 processes x 1 thread, 128 trajectories each, gradients averaged (gloo), as
  ``minrep train --devices 2 --batch-size 128``: the same global batch of 256;
- ``minrep_whole``: ``minrep`` with the whole-trajectory decoder (every step, memories of the
  whole past; ``docs/whole-decoder.md``), whole trajectories;
- ``minrep_bf16``: ``minrep`` with the forward pass under bfloat16 autocast, as ``minrep train
  --precision bf16-mixed`` (the head's last layer, likelihood and KL in float32).

The epoch figures run ``minrep train`` for 3 epochs on 25,200 trajectories (80 % trained, with
validation, history and checkpoints), alone and with ``--devices 2 --batch-size 128``, and
divide the training trajectories by the mean time of epochs 2 and 3; once more with
``--decoder whole`` (which trains on prefixes of random length), reported as its epoch time
over the window decoder's (issue 10: at most 1.5); once more with ``--precision bf16-mixed``.
Each epoch figure is also given as a ratio to the paper's network run as a plain PyTorch loop
over the same counts (float32, 2 threads, a fresh process; issue 13: at least 2.0x in the fast
setting). For scale: the paper's implementation reaches about 1,700 trajectories/s per step
and 1,400-1,650 per epoch on this machine kind.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _report import emit

from minrep import datasets, io, train
from minrep.model import VAE, ModelConfig
from minrep.schedule import Plan, Stage

BATCH = 256
CONFIGURATIONS = (
    "paper_network",
    "minrep_default_allocator",
    "minrep",
    "minrep_ddp",
    "minrep_whole",
    "minrep_bf16",
)


def batch_of_trajectories() -> torch.Tensor:
    data = datasets.make_dataset("fbm", "paper", n_per_cell=2, seed=0)
    return torch.from_numpy(data.displacements[:BATCH])


def model_config(name: str, batch: torch.Tensor) -> ModelConfig:
    if name == "paper_network":
        return ModelConfig.published()
    log_scale = float(torch.log(batch.pow(2).mean(dim=(1, 2)).sqrt()).mean())
    decoder = "whole" if name == "minrep_whole" else "window"
    return ModelConfig(scale_equivariant=True, log_scale_mean=log_scale, decoder=decoder)


class LossModule(torch.nn.Module):
    """DistributedDataParallel synchronises gradients of what its forward computes. With
    ``bf16``, the forward runs under bfloat16 autocast, as ``minrep train --precision
    bf16-mixed`` runs it."""

    def __init__(self, model: VAE, bf16: bool = False):
        super().__init__()
        self.model = model
        self.bf16 = bf16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            return self.model.loss(x, 1e-3)[0]


def time_steps(module: torch.nn.Module, x: torch.Tensor, steps: int, warmup: int = 3) -> float:
    """Median seconds of one optimisation step."""
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-5)
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        loss = module(x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def ddp_worker(rank: int, steps: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    train.keep_freed_memory()
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2
    )
    batch = batch_of_trajectories()
    torch.manual_seed(0)
    model = VAE(model_config("minrep", batch))
    module = torch.nn.parallel.DistributedDataParallel(LossModule(model))
    half = batch[rank * BATCH // 2 : (rank + 1) * BATCH // 2]
    seconds = time_steps(module, half, steps)
    if rank == 0:
        Path(out).write_text(json.dumps({"median_seconds_per_step": seconds}))
    torch.distributed.destroy_process_group()


def worker(name: str, steps: int, out: str) -> None:
    """One configuration, in this fresh process; writes its median step time to ``out``."""
    if name == "minrep_ddp":
        with socket.socket() as probe:  # a free port for the process group
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        torch.multiprocessing.spawn(ddp_worker, args=(steps, port, out), nprocs=2)
        return
    torch.set_num_threads(2)
    if name in ("minrep", "minrep_whole", "minrep_bf16"):
        train.keep_freed_memory()
    batch = batch_of_trajectories()
    torch.manual_seed(0)
    module = LossModule(VAE(model_config(name, batch)), bf16=name == "minrep_bf16")
    seconds = time_steps(module, batch, steps)
    Path(out).write_text(json.dumps({"median_seconds_per_step": seconds}))


def plain_loop_worker(data: str, out: str) -> None:
    """The paper's network as a plain PyTorch loop over the same counts as an epoch of
    ``minrep train`` (the 80 % trained in batches of 256, Adam; the 20 % held out scored, no
    gradient), 2 threads, float32: seconds per epoch, the mean of epochs 2 and 3."""
    torch.set_num_threads(2)
    x = torch.from_numpy(io.load_npz(data).displacements)
    n_train = int(len(x) * 0.8)
    torch.manual_seed(0)
    model = VAE(model_config("paper_network", x[:BATCH]))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        for i in range(0, n_train, BATCH):
            loss = model.loss(x[i : i + BATCH], 1e-3)[0]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            for i in range(n_train, len(x), BATCH):
                model(x[i : i + BATCH], sample=False)
        times.append(time.perf_counter() - start)
    Path(out).write_text(json.dumps({"seconds_per_epoch": statistics.mean(times[1:])}))


def run_worker(name: str, *options) -> dict:
    """A worker in a fresh process; its JSON result."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, __file__, "--worker", name, *options, "-o", out]
        subprocess.run([str(c) for c in command], check=True)
        return json.loads(out.read_text())


def epoch_throughput(data: Path, extra: list[str]) -> dict:
    """``minrep train`` for 3 epochs; trajectories per second over epochs 2 and 3."""
    with tempfile.TemporaryDirectory() as tmp:
        plan = Path(tmp) / "plan.json"
        plan.write_text(json.dumps(Plan([Stage(3, 0.0)]).to_dict()))
        run = Path(tmp) / "run"
        command = ["minrep", "train", str(data), "-o", str(run), "--plan", str(plan), *extra]
        subprocess.run(command, check=True, capture_output=True)
        with open(run / "history.csv") as handle:
            rows = list(csv.DictReader(handle))
        n_train = json.loads((run / "config.json").read_text())["data"]["n_train"]
    elapsed = [float(row["elapsed_seconds"]) for row in rows]
    per_epoch = (elapsed[-1] - elapsed[0]) / (len(rows) - 1)
    return {
        "command": " ".join(["minrep train DATA --plan 3-epochs", *extra]),
        "train_trajectories": n_train,
        "seconds_per_epoch": per_epoch,
        "trajectories_per_second": n_train / per_epoch,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output")
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker", choices=(*CONFIGURATIONS, "plain_loop"), help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument(
        "--epoch-trajectories",
        type=int,
        default=25_200,
        help="trajectories simulated for the epoch measurement (80 %% trained)",
    )
    args = parser.parse_args()
    if args.worker == "plain_loop":
        plain_loop_worker(args.data, args.output)
        return
    if args.worker:
        worker(args.worker, args.steps, args.output)
        return

    seconds = {name: [] for name in CONFIGURATIONS}
    for _ in range(args.rounds):
        for name in CONFIGURATIONS:
            result = run_worker(name, "--steps", str(args.steps))
            seconds[name].append(result["median_seconds_per_step"])
    baseline = statistics.median(seconds["paper_network"])
    steps = {}
    for name, values in seconds.items():
        median = statistics.median(values)
        steps[name] = {
            "median_seconds_per_step": median,
            "trajectories_per_second": BATCH / median,
            "per_round": [BATCH / v for v in values],
            "speed_up_over_paper_network": baseline / median,
        }

    with tempfile.TemporaryDirectory() as tmp:
        data = datasets.make_dataset(
            "fbm", "paper", n_per_cell=args.epoch_trajectories // 210, seed=0
        )
        path = Path(tmp) / "data.npz"
        io.save_npz(data, path)
        epochs = {
            "one_process": epoch_throughput(path, []),
            "ddp_2_processes": epoch_throughput(
                path, ["--devices", "2", "--accelerator", "cpu", "--batch-size", "128"]
            ),
            "whole_decoder": epoch_throughput(path, ["--decoder", "whole"]),
            "bf16_mixed": epoch_throughput(path, ["--precision", "bf16-mixed"]),
        }
        whole, window = epochs["whole_decoder"], epochs["one_process"]
        whole["epoch_time_over_window_decoder"] = (
            whole["seconds_per_epoch"] / window["seconds_per_epoch"]
        )
        loop = run_worker("plain_loop", "--data", str(path))["seconds_per_epoch"]
        for figures in epochs.values():
            figures["speed_up_over_paper_network_loop"] = loop / figures["seconds_per_epoch"]
        epochs["paper_network_plain_loop"] = {"seconds_per_epoch": loop}
    emit(
        {
            "machine": {
                "cpus": os.cpu_count(),
                "torch": torch.__version__,
                "python": platform.python_version(),
            },
            "batch": BATCH,
            "n_positions": 400,
            "step": steps,
            "epoch": epochs,
        },
        args.output,
    )


if __name__ == "__main__":
    main()
