"""Tests of minrep.plots: figures on their own Figure objects (the user's backend and pyplot
left alone), the training-history figure, and the view of the latent surfaces."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from minrep import plots

EXACT = -2.5


def _history(gaps, exact=EXACT, n_latents=3):
    """A history.csv table of ``len(gaps)`` epochs whose held-out NLL is exact + gap."""
    n = len(gaps)
    table = {
        "epoch": np.arange(1, n + 1),
        "stage": [1] * (n // 2) + [2] * (n - n // 2),
        "beta": np.linspace(1e-4, 5e-3, n),
        "lr": np.full(n, 1e-3),
        "train_loss": np.zeros(n),
        "val_loss": np.zeros(n),
        "val_nll": exact + np.asarray(gaps),
        "val_exact_nll": np.full(n, exact),
        "val_exact_nll_rf": np.full(n, exact + 0.01),
        "val_kl": np.ones(n),
    }
    for i in range(n_latents):
        table[f"kl_{i}"] = np.geomspace(1.0, 10.0 ** -(i + 1), n)
    return pd.DataFrame(table)


def _axes_titled(figure, start):
    (ax,) = [ax for ax in figure.axes if ax.get_title().startswith(start)]
    return ax


def test_training_history_shows_every_epoch(tmp_path):
    # A short run far above the exact NLL (the old figure cut the axis at exact + 0.3 and drew
    # none of it), then one epoch slightly below it.
    gaps = [2.0, 0.6, 0.35, -0.002]
    history = _history(gaps)
    figure = plots.training_history_figure(history)
    nll = _axes_titled(figure, "Held-out NLL")
    low, high = nll.get_ylim()
    assert low <= min(history["val_nll"].min(), EXACT) and high >= history["val_nll"].max()
    gap = _axes_titled(figure, "Gap to the exact NLL")
    assert gap.get_yscale() == "symlog"
    low, high = gap.get_ylim()
    assert low <= min(gaps) and high >= max(gaps)
    kl = _axes_titled(figure, "KL per latent")
    legend = [text.get_text() for text in kl.get_legend().get_texts()]
    assert "beta" in legend and "survival threshold" in legend
    assert {"z0", "z1", "z2"} <= set(legend)

    run = tmp_path / "run"
    run.mkdir()
    assert plots.plot_training_history(run) is None  # no history yet
    history.to_csv(run / "history.csv", index=False)
    path = plots.plot_training_history(run)
    assert path == run / "figures" / "training.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["training.png"]  # no temporary left


def test_training_history_without_an_exact_nll():
    history = _history([1.0, 0.5])
    history["val_exact_nll"] = np.nan
    history["val_exact_nll_rf"] = np.nan
    figure = plots.training_history_figure(history)
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    assert len(titles) == 2 and not any(t.startswith("Gap") for t in titles)
    assert plots.training_history_figure(history.iloc[:0]) is None


def _box_normal(x, y, z):
    """Unit normal of a plane z(x, y) in matplotlib's 3D box (axes spanning 4, 4, 3)."""
    scale = np.array([4, 4, 3]) / np.array([np.ptp(x), np.ptp(y), np.ptp(z)])
    slope_x = np.polyfit(x[:, 0], z[:, 0], 1)[0] * scale[2] / scale[0]
    slope_y = np.polyfit(y[0], z[0], 1)[0] * scale[2] / scale[1]
    normal = np.array([-slope_x, -slope_y, 1.0])
    return normal / np.linalg.norm(normal)


def _direction(elev, azim):
    e, a = np.radians(elev), np.radians(azim)
    return np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])


@pytest.mark.parametrize("slope_alpha, slope_d", [(0.0, -1.0), (2.0, -1.0), (-3.0, 0.2)])
def test_latent_surfaces_are_seen_face_on(slope_alpha, slope_d):
    alpha, log_d = np.meshgrid(np.linspace(0, 2, 20), np.linspace(-5.5, -1.5, 15), indexing="ij")
    z = slope_alpha * alpha + slope_d * log_d
    normal = _box_normal(alpha, log_d, z)
    chosen = abs(_direction(*plots.view_angles(alpha, log_d, z)) @ normal)
    if (slope_alpha, slope_d) == (0.0, -1.0):
        # matplotlib's default view (30, -60) sees this surface edge-on, as the old Fig. 5 did.
        assert abs(_direction(30, -60) @ normal) < 0.1
    assert chosen > 0.8


def test_plots_leave_the_backend_and_pyplot_alone(tmp_path):
    """Drawing and saving a figure neither switches the user's backend (as matplotlib.use
    would) nor imports pyplot (whose global figures a notebook would show)."""
    _history([1.0, 0.2, 0.05]).to_csv(tmp_path / "history.csv", index=False)
    script = textwrap.dedent(
        f"""
        import sys
        import matplotlib
        from minrep import plots
        assert plots.plot_training_history({str(tmp_path)!r}) is not None
        print(matplotlib.rcParams["backend"], "matplotlib.pyplot" in sys.modules)
        """
    )
    env = {**os.environ, "MPLBACKEND": "svg"}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["svg", "False"]
