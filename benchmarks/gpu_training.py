"""Every GPU measurement of training in one call (issue 13), as JSON.

    python benchmarks/gpu_training.py -o gpu_training.json [--budget 500]

On the `paper` FBM set of the seed study (data seed 101: 79,968 trajectories trained, 19,992
validated, T = 399 displacements), in this order (``--parts`` picks some):

0. ``diagnose``: one epoch by hand (no Lightning) eager, graph, eager again, and the training
   loss and held-out NLL per epoch of 3 epochs through ``train``, graph and eager: they
   should agree to the spread of the two eager runs (the first graph trained worse through
   ``minrep train`` on an H200, benchmarks/results/gpu_training_h200.json: Lightning cleared
   the gradients before each validation).
1. ``step``: one training step at batch 256 (forward, loss, backward, fused Adam) of minrep's
   network, eager and replayed from a CUDA graph (:mod:`minrep.cudagraph`), float32 and bf16
   autocast; and the largest relative difference of the loss and gradients between the graph
   and the eager pass from the same random numbers.
2. ``epoch``: seconds per epoch through :func:`minrep.train.train` (validation, history and
   checkpoint included; mean of epochs 2-3): eager float32 (the path before the graph), the
   graph in float32 and in bf16-mixed.
3. ``paper``: the whole `paper` preset (162-170 epochs, seed 1) in the faster setting, wall time
   from the call to ``train`` to the exported model, final NLL and surviving latents.
4. ``quick_32-true``, ``quick_bf16-mixed``: the precision check, the `quick` preset (seed 1)
   in both settings, against the CPU's run of the same data and seed (seed study).

Each part is written out as soon as it ends. A training that would overrun ``--budget``
seconds (counted from the start) is cut with ``max_epochs`` and says so; its full time is
then projected from its epochs.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import traceback
from pathlib import Path

import torch
from gpu_throughput import timed

from minrep import datasets, train
from minrep.cudagraph import GradientGraph
from minrep.model import VAE, ModelConfig
from minrep.schedule import PRESETS, Plan, Stage

DATA_SEED, SEED = 101, 1  # the seed study's FBM seed 1 (docs/results/seed_study_quick.json)
START = time.perf_counter()


def step_seconds(model, batch, optimizer, graph: GradientGraph | None, steps=100) -> float:
    def one():
        if graph is None:
            optimizer.zero_grad(set_to_none=False)
            model.loss(batch, 1e-3)[0].backward()
        else:
            graph(batch, 1e-3, 0.0)
        optimizer.step()

    for _ in range(9):  # timed() runs one more before timing
        one()
    return timed(one, steps)


def graph_against_eager(batches, precision: str, steps: int = 6) -> dict:
    """Train two copies of one network side by side for ``steps`` Adam steps on different
    batches, one from the graph and one eagerly, each step from the same random numbers:
    the largest relative difference of the loss and of each gradient over the steps (a
    gradient the graph failed to refresh shows from the second step on), and of the weights
    at the end."""
    torch.manual_seed(0)
    eager_model = VAE(ModelConfig()).cuda()
    graph_model = VAE(ModelConfig()).cuda()
    graph_model.load_state_dict(eager_model.state_dict())
    optimizers = [torch.optim.Adam(m.parameters(), fused=True) for m in (eager_model, graph_model)]
    bf16 = precision == "bf16-mixed"
    worst = {"loss": 0.0, "gradient": 0.0}

    def relative(a, b) -> float:
        return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)).item()

    with torch.autocast("cuda", torch.bfloat16, enabled=bf16, cache_enabled=False):
        graph = GradientGraph(graph_model, batches[0], None)
        for k in range(steps):
            batch = batches[k % len(batches)]
            torch.cuda.manual_seed(100 + k)
            loss = eager_model.loss(batch, 1e-3)[0]
            params = list(eager_model.parameters())
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            for p, g in zip(params, grads, strict=True):
                p.grad = g
            torch.cuda.manual_seed(100 + k)
            replayed = graph(batch, 1e-3, 0.0)
            worst["loss"] = max(worst["loss"], relative(replayed, loss.detach()))
            for p, g in zip(graph.params, grads, strict=True):
                if g is not None:
                    worst["gradient"] = max(worst["gradient"], relative(p.grad, g))
            for optimizer in optimizers:
                optimizer.step()
    worst["weights"] = max(
        relative(a, b)
        for a, b in zip(graph_model.parameters(), eager_model.parameters(), strict=True)
    )
    return worst


def measure_steps(data) -> dict:
    batch = torch.as_tensor(data.displacements[:256]).cuda()
    out = {}
    for precision in ("32-true", "bf16-mixed"):
        bf16 = precision == "bf16-mixed"
        for graphed in (False, True):
            torch.manual_seed(0)
            model = VAE(ModelConfig()).cuda()
            optimizer = torch.optim.Adam(model.parameters(), fused=True)
            with torch.autocast("cuda", torch.bfloat16, enabled=bf16, cache_enabled=not graphed):
                graph = GradientGraph(model, batch, None) if graphed else None
                seconds = step_seconds(model, batch, optimizer, graph)
            name = f"{'graph' if graphed else 'eager'}_{precision}"
            out[name] = {"seconds_per_step": seconds, "trajectories_per_second": 256 / seconds}
        batches = [torch.as_tensor(data.displacements[i : i + 256]).cuda() for i in (0, 256, 512)]
        out[f"graph_vs_eager_{precision}"] = graph_against_eager(batches, precision)
    return out


def one_epoch_by_hand(data, graphed: bool) -> dict:
    """The diagnosis of the graph without Lightning: one epoch of minrep's network at beta 0,
    constant learning rate 1e-3, full batches of 256 of the training split in a seeded order,
    Adam stepped by hand after an eager pass or a replay; then the held-out NLL (eager,
    posterior means). Eager and graph should agree to the spread of two eager runs."""
    train_rows, val_rows = train.split(len(data), 0.2, SEED)
    x = torch.as_tensor(data.displacements).cuda()
    train_set, val_set = x[torch.as_tensor(train_rows)], x[torch.as_tensor(val_rows)]
    torch.manual_seed(0)
    model = VAE(ModelConfig()).cuda()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(0)).cuda()
    graph, losses = None, []
    for start in range(0, len(train_set) - 255, 256):
        batch = train_set[order[start : start + 256]]
        if graphed:
            graph = graph or GradientGraph(model, batch, None)
            loss = graph(batch, 0.0, 0.0).clone()
        else:
            optimizer.zero_grad()
            loss = model.loss(batch, 0.0)[0]
            loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    losses = torch.stack(losses)
    with torch.no_grad():
        nll = torch.cat([model(b, sample=False)["nll"] for b in val_set.split(8192)]).mean()
    return {
        "train_loss_first_50": losses[:50].mean().item(),
        "train_loss_last_50": losses[-50:].mean().item(),
        "val_nll": nll.item(),
    }


def history_of(data, **settings) -> list[dict]:
    """Training loss and held-out NLL per epoch of 3 epochs at beta 0 through train()."""
    config = train.TrainConfig(plan=Plan([Stage(3, 0.0)]), seed=SEED, **settings)
    with tempfile.TemporaryDirectory() as run:
        rows = train.train(data, run, config, progress=False).history
    return [{k: r[k] for k in ("epoch", "train_loss", "val_nll", "lr")} for r in rows]


def run_training(data, plan_or_preset, budget: float, per_epoch_guess: float, **settings) -> dict:
    """Train through minrep.train.train, cut to the epochs that fit the budget left."""
    plan = PRESETS[plan_or_preset] if isinstance(plan_or_preset, str) else plan_or_preset
    left = budget - (time.perf_counter() - START) - 10
    fits = max(1, int(left / per_epoch_guess))
    config = train.TrainConfig(plan=plan, seed=SEED, max_epochs=min(plan.epochs, fits), **settings)
    with tempfile.TemporaryDirectory() as run:
        began = time.perf_counter()
        result = train.train(data, run, config, progress=False)
        wall = time.perf_counter() - began
    rows = result.history
    per_epoch = (rows[-1]["elapsed_seconds"] - rows[0]["elapsed_seconds"]) / max(len(rows) - 1, 1)
    last = rows[-1]
    return {
        "settings": settings,
        "epochs": len(rows),
        "plan_epochs": plan.epochs,
        "cut": len(rows) < plan.epochs,
        "wall_seconds": wall,
        "seconds_per_epoch": per_epoch,
        "projected_plan_seconds": wall + (plan.epochs - len(rows)) * per_epoch,
        "val_nll": last["val_nll"],
        "val_exact_nll": last["val_exact_nll"],
        "surviving": last["surviving"],
        "kl_per_latent": [last[f"kl_{i}"] for i in range(6)],
        "effective_dimension": last["effective_dimension"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--budget", type=float, default=500.0, help="seconds for everything")
    parser.add_argument(
        "--parts",
        nargs="+",
        default=["diagnose", "step", "epoch", "paper", "quick"],
        help="which to run",
    )
    args = parser.parse_args()
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}

    def done(part: str, measure) -> object:
        """Run one part; a failure is recorded (with its traceback) and the next part runs."""
        try:
            report[part] = measure()
        except Exception:  # noqa: BLE001 - one window of GPU time: keep every other part
            report[part] = {"error": traceback.format_exc()}
        report["elapsed_seconds"] = time.perf_counter() - START
        args.output.write_text(json.dumps(report, indent=2) + "\n")
        print(part, json.dumps(report[part])[-1500:], flush=True)
        return report[part]

    train.keep_freed_memory()  # as `minrep train` does
    data = datasets.make_dataset("fbm", "paper", seed=DATA_SEED)
    done("data", lambda: {"trajectories": len(data), "checksum": float(data.displacements.sum())})
    if "diagnose" in args.parts:
        for graphed in (False, True, False):
            name = f"by_hand_{'graph' if graphed else 'eager'}"
            done(
                name if name not in report else name + "_again",
                lambda g=graphed: one_epoch_by_hand(data, g),
            )
        done("history_graph", lambda: history_of(data, cuda_graph=True))
        done("history_eager", lambda: history_of(data, cuda_graph=False))
    if "step" in args.parts:
        done("step", lambda: measure_steps(data))
    if "epoch" not in args.parts:
        return
    three = Plan([Stage(3, 0.0)])
    settings = {
        "eager_32-true": {"cuda_graph": False},
        "graph_32-true": {"cuda_graph": True},
        "graph_bf16-mixed": {"precision": "bf16-mixed", "cuda_graph": True},
    }
    epochs = {
        name: done(f"epoch_{name}", lambda s=s: run_training(data, three, args.budget, 10.0, **s))
        for name, s in settings.items()
    }
    timed = {n: e["seconds_per_epoch"] for n, e in epochs.items() if "error" not in e}
    fastest = min(timed, key=timed.get)
    if "paper" in args.parts:
        done(
            "paper",
            lambda: run_training(data, "paper", args.budget, timed[fastest], **settings[fastest]),
        )
    for precision in ("32-true", "bf16-mixed") if "quick" in args.parts else ():
        name = f"graph_{precision}" if f"graph_{precision}" in timed else fastest
        chosen = {**settings[name], "precision": precision}
        done(
            f"quick_{precision}",
            lambda c=chosen, n=name: run_training(data, "quick", args.budget, timed[n], **c),
        )
    print(json.dumps({k: v for k, v in report.items() if k != "step"}, indent=1)[-3000:])


if __name__ == "__main__":
    main()
