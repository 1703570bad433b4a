"""What the scale-equivariant parameterisation fixes: the gradient norm and the NLL of one
batch of FBM trajectories per value of D on the paper's grid, for trained models given as
NAME=MODEL (a run directory or a shipped name) and for fresh initialisations of the same
networks. Writes docs/results/scale_equivariance.json and docs/figures/scale_equivariance.png.

    python scripts/scale_equivariance.py "published=runs/published" \
        "tanh gate, unscaled=runs/tanh-unscaled" "scale-equivariant=fbm"

With a network that predicts each displacement's law in displacement units, the gradient of
the NLL with respect to the predicted mean grows like 1 / sigma: once the network has learned
the scale, the smallest-D trajectories dominate every step.
"""

import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from minrep import load_model, processes
from minrep.model import VAE

ALPHAS = (0.4, 1.0, 1.6)
DS = np.geomspace(1e-5, 1e-2, 10)
PER_CELL = 86  # 3 alphas x 86 = 258 trajectories per D, about the batch of 256
SEEDS = range(3)  # fresh initialisations


def measure(models: list, batches: list[torch.Tensor]) -> dict:
    """NLL and gradient norm of each batch (rows: models)."""
    nll, grad = np.empty((len(models), len(batches))), np.empty((len(models), len(batches)))
    for i, model in enumerate(models):
        model.train()
        for j, batch in enumerate(batches):
            model.zero_grad()
            loss, terms = model.loss(batch, beta=0.0)
            loss.backward()
            norms = [p.grad.norm() ** 2 for p in model.parameters() if p.grad is not None]
            nll[i, j] = terms["nll"].item()
            grad[i, j] = math.sqrt(sum(norms).item())
    return {"nll": nll.tolist(), "gradient_norm": grad.tolist()}


def fresh(config, seed: int) -> VAE:
    torch.manual_seed(seed)
    return VAE(config)


def main(named: list[str]) -> None:
    torch.set_num_threads(1)
    batches = []
    for j, d in enumerate(DS):
        alpha = np.repeat(ALPHAS, PER_CELL)
        x = processes.simulate("fbm", alpha, d, 399, seed=j)
        batches.append(torch.from_numpy(x))
    results = {
        "D": DS.tolist(),
        "alphas": list(ALPHAS),
        "trajectories_per_D": len(ALPHAS) * PER_CELL,
        "trained": {},
        "initialisation": {},
    }
    for item in named:
        name, path = item.split("=", 1)
        model = load_model(path)
        torch.manual_seed(0)  # the reparameterisation noise
        results["trained"][name] = {"model": path, **measure([model], batches)}
        models = [fresh(model.config, seed) for seed in SEEDS]
        results["initialisation"][name] = measure(models, batches)
    out = Path("docs/results/scale_equivariance.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    figure = Figure(figsize=(10, 3.8), layout="constrained")
    ax_grad, ax_nll = figure.subplots(1, 2)
    for k, name in enumerate(results["trained"]):
        for state, style in (("trained", "-"), ("initialisation", ":")):
            values = results[state][name]
            label = f"{name}, {'trained' if state == 'trained' else 'at initialisation'}"
            for ax, key in ((ax_grad, "gradient_norm"), (ax_nll, "nll")):
                median = np.median(np.asarray(values[key]), 0)
                ax.plot(DS, median, ls=style, marker="o", color=f"C{k}", label=label)
    ax_grad.set(
        xscale="log",
        yscale="log",
        xlabel="D",
        ylabel="gradient norm",
        title="Gradient norm of one batch of 258 FBM trajectories",
    )
    ax_nll.set(
        xscale="log",
        xlabel="D",
        ylabel="NLL (nat per displacement)",
        title="NLL of the same batch",
    )
    ax_grad.legend(fontsize=7)
    figure.savefig("docs/figures/scale_equivariance.png", dpi=100)
    for name, values in results["trained"].items():
        g = np.asarray(values["gradient_norm"])[0]
        print(f"{name} (trained): gradient norm {g[0]:.3g} at D = 1e-5, {g[-1]:.3g} at D = 1e-2")


if __name__ == "__main__":
    main(sys.argv[1:])
