"""Tests of minrep.analysis on latents with known answers."""

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from minrep import analysis, io, processes
from minrep.checkpoint import save_model
from minrep.cli import app
from minrep.model import VAE, ModelConfig


def test_latent_statistics_kl_formula_and_survivors():
    rng = np.random.default_rng(0)
    n = 20000
    # Latent 0 informative (posterior N(m, 0.1^2) with m ~ N(0, 1)); latent 1 at the prior.
    mu = np.stack([rng.standard_normal(n), np.zeros(n)], axis=1)
    logvar = np.stack([np.full(n, 2 * np.log(0.1)), np.zeros(n)], axis=1)
    stats = analysis.latent_statistics(mu, logvar)
    expected = 0.5 * (1.0 + 0.01 - 1 - np.log(0.01))  # E[m^2] = 1
    # The sample mean of m^2 has std sqrt(2 / n) = 0.01, so the KL (2.3 nat) has std 0.005.
    assert stats["kl_per_latent"][0] == pytest.approx(expected, abs=0.025)
    assert stats["kl_per_latent"][1] == 0.0
    assert stats["surviving"] == [0]
    assert stats["mean_logvar"][0] == pytest.approx(2 * np.log(0.1))


def test_readout_r2_perfect_code_and_noise():
    rng = np.random.default_rng(1)
    alpha = rng.uniform(0.2, 1.8, 4000)
    code = np.stack([np.tanh(alpha - 1), rng.standard_normal(4000)], axis=1)  # smooth, invertible
    assert analysis.readout_r2(code, alpha) > 0.999
    noise = rng.standard_normal((4000, 2))
    # Pure noise: over 100 seeds the held-out R^2 of this 10-term fit measured -0.005 +- 0.004
    # (min -0.020): 0.03 is beyond 5 standard deviations.
    assert abs(analysis.readout_r2(noise, alpha)) < 0.03
    assert analysis.readout_r2(np.empty((4000, 0)), alpha) == 0.0


def test_evaluate_and_analyze_command(tmp_path):
    torch.manual_seed(0)
    data = processes.make_dataset(
        "fbm", alpha=(0.5, 1.5), D=(1e-3, 1e-2), n_per_cell=20, n_positions=60, seed=2
    )
    model = VAE(ModelConfig(scale_equivariant=True, log_scale_mean=float(np.log(0.1)))).eval()
    metrics = analysis.evaluate(model, data)
    exact = processes.exact_nll(data.displacements, "fbm", data.alpha, data.D, start=32)
    assert metrics["exact_nll_mean"] == pytest.approx(exact.mean())
    nll = analysis.model_nll(model, data)
    assert metrics["nll_gap"] == pytest.approx(nll.mean() - exact.mean())
    assert len(metrics["kl_per_latent"]) == 6
    save_model(model, tmp_path / "m")
    path = io.save_npz(data, tmp_path / "test.npz")
    result = CliRunner().invoke(
        app, ["analyze", str(tmp_path / "m"), "--data", str(path), "-o", str(tmp_path / "report")]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "report" / "metrics.json").is_file()
    assert "nll_gap" in result.output


def _factors(n, rng):
    return np.stack([rng.uniform(0.2, 1.8, n), rng.uniform(-5, -2, n)], axis=1)


def test_mig_and_dci_of_a_perfect_code():
    rng = np.random.default_rng(3)
    factors = _factors(20000, rng)
    # One latent per factor (monotone transforms), plus two pure-noise latents.
    code = np.column_stack(
        [np.tanh(factors[:, 0] - 1), -(factors[:, 1] ** 3), rng.standard_normal((20000, 2))]
    )
    scores = analysis.mig(code, factors)
    # A monotone code has the factor's whole binned entropy (log 20 = 3.0 nat) up to the
    # histogram's bias; the next-best latent is independent: MIG close to 1.
    assert scores["mig"] > 0.9
    d = analysis.dci(code, factors)
    assert d["disentanglement"] > 0.95 and d["completeness"] > 0.9
    assert d["informativeness"] > 0.99


def test_mig_and_dci_of_noise():
    rng = np.random.default_rng(4)
    factors = _factors(20000, rng)
    noise = rng.standard_normal((20000, 4))
    scores = analysis.mig(noise, factors)
    # Independent codes: the histogram estimate of MI is its bias, ~(bins - 1)^2 / (2 n)
    # = 0.009 nat, against 3.0 nat of entropy.
    assert scores["mig"] < 0.01
    assert analysis.dci(noise, factors)["informativeness"] < 0.03
