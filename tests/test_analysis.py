"""Tests of minrep.analysis on latents with known answers."""

import html
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from known_models import known_law_model, known_whole_model
from minrep import analysis, datasets, io, processes
from minrep.checkpoint import save_model
from minrep.cli import app
from minrep.dimension import SNR_FACTOR, LatentMoments, effective_dimension
from minrep.model import VAE, ModelConfig
from minrep.plots import write_report

STD = 0.02  # the hand-set decoder draws white noise of this std: BM with D = STD^2 / 2


@pytest.fixture(autouse=True)
def _single_thread():
    torch.set_num_threads(1)


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


# -- the effective dimension, on hand-made posteriors of known dimension -------------------

N_CODES = 5000
SIGNAL_NOISE = 0.1**2  # posterior variance of an informative latent (SNR 100 for unit signal)


def _two_informative(rng):
    """Latents 0 and 1: independent unit-variance signals, posterior variance 0.01; latents
    2-5 collapsed (mu about 0, logvar about 0)."""
    mu = np.zeros((N_CODES, 6))
    logvar = np.zeros((N_CODES, 6))
    mu[:, :2] = rng.standard_normal((N_CODES, 2))
    logvar[:, :2] = np.log(SIGNAL_NOISE)
    mu[:, 2:] = 0.03 * rng.standard_normal((N_CODES, 4))
    logvar[:, 2:] = 0.01 * rng.standard_normal((N_CODES, 4))
    return mu, logvar


def test_two_informative_latents_and_four_collapsed_span_two_dimensions():
    mu, logvar = _two_informative(np.random.default_rng(0))
    found = effective_dimension(mu, logvar)
    assert found.dimension == 2 and found.surviving == [0, 1]
    assert found.snr == sorted(found.snr, reverse=True) and len(found.snr) == 6
    # Unit signal against 0.01 of noise: SNR 100 (sample variance within a few per cent).
    assert found.snr[:2] == pytest.approx([100, 100], rel=0.1)
    assert found.signal[:2] == pytest.approx([1, 1], rel=0.1)
    assert found.noise[:2] == pytest.approx([SIGNAL_NOISE] * 2, rel=1e-3)
    assert max(found.snr[2:]) < 0.01  # collapsed: 0.03^2 of scatter against a noise of 1
    assert found.redundant == [] and found.noisy == [] and found.message() is None


def test_noisy_copies_of_one_signal_are_one_dimension_and_reported_redundant():
    rng = np.random.default_rng(1)
    mu, logvar = _two_informative(rng)
    # Latent 4 copies latent 0 (scaled, with its own scatter well below its noise): it
    # survives (KL about 2 nat) but adds no direction.
    mu[:, 4] = -0.8 * mu[:, 0] + 0.02 * rng.standard_normal(N_CODES)
    logvar[:, 4] = np.log(SIGNAL_NOISE)
    found = effective_dimension(mu, logvar)
    assert found.surviving == [0, 1, 4]
    assert found.dimension == 2
    assert found.redundant == [[0, 4]] and found.redundant_latents == [0, 4]
    assert found.noisy == []
    assert found.message().startswith(
        "3 latents carry information; they span 2 dimensions: latents 0 and 4 are redundant; "
        "a longer final stage"
    )
    # The copy's direction holds both latents' signal: SNR (1 + 0.64) / 0.01.
    assert found.snr[0] == pytest.approx(164, rel=0.1)
    # What the copy adds: its own scatter (0.02^2 against 0.01), less what latent 0 explains
    # of it: 0.04 / (1 + 0.8^2) = 0.024, well below the factor.
    assert found.snr[2] == pytest.approx(0.024, rel=0.2) and found.snr[2] < SNR_FACTOR


def test_means_scattered_within_the_posterior_noise_span_no_dimension():
    rng = np.random.default_rng(2)
    # Every latent survives (its posterior is narrow: KL about 1.8 nat), but the means
    # scatter well inside the posterior noise (std 0.03 against 0.1): SNR about 0.09, below
    # the factor (0.22: 0.1 nat).
    mu = 0.03 * rng.standard_normal((N_CODES, 6))
    logvar = np.full((N_CODES, 6), np.log(SIGNAL_NOISE))
    found = effective_dimension(mu, logvar)
    assert found.surviving == [0, 1, 2, 3, 4, 5]
    assert found.dimension == 0
    assert max(found.snr) == pytest.approx(0.09, abs=0.02) and max(found.snr) < SNR_FACTOR
    assert found.noisy == [0, 1, 2, 3, 4, 5] and found.redundant == []
    assert "6 latents carry information; they span 0 dimensions" in found.message()


def test_a_rotation_of_two_signals_over_six_latents_spans_two_dimensions():
    rng = np.random.default_rng(3)
    mu, logvar = _two_informative(rng)
    rotation, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    # The two signals spread over all six latents; each latent's posterior variance 0.01.
    signal = np.zeros((N_CODES, 6))
    signal[:, :2] = mu[:, :2]
    rotated = signal @ rotation.T
    noise = np.full((N_CODES, 6), np.log(SIGNAL_NOISE))
    found = effective_dimension(rotated, noise)
    unrotated = effective_dimension(signal, noise)
    assert found.dimension == unrotated.dimension == 2
    # The SNRs do not depend on the basis when the noise is isotropic.
    assert found.snr == pytest.approx(unrotated.snr, rel=1e-6, abs=1e-9)
    # Every latent that survives loads on one of the two directions; the directions are
    # shared, so more than two surviving latents are redundant copies.
    assert len(found.surviving) > 2
    assert sorted(found.redundant_latents + found.noisy) == found.surviving
    assert len(found.redundant) <= 2


def test_the_moments_form_adds_up_and_equals_the_direct_form():
    rng = np.random.default_rng(4)
    mu, logvar = _two_informative(rng)
    mu[:, 4] = mu[:, 0] + 0.02 * rng.standard_normal(N_CODES)
    logvar[:, 4] = np.log(SIGNAL_NOISE)
    direct = effective_dimension(mu, logvar)
    # In three uneven batches, through the flat vector a training loop reduces.
    parts = [LatentMoments.of(mu[a:b], logvar[a:b]) for a, b in ((0, 7), (7, 3000), (3000, None))]
    total = parts[0] + parts[1] + parts[2]
    total = LatentMoments.from_vector(total.to_vector())
    assert len(total.to_vector()) == LatentMoments.size(6)
    assert total.count == N_CODES
    np.testing.assert_allclose(total.signal(), np.cov(mu.T, bias=True), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(total.noise(), np.exp(logvar).mean(0), rtol=1e-12)
    stats = analysis.latent_statistics(mu, logvar)
    np.testing.assert_allclose(total.kl_per_latent(), stats["kl_per_latent"], rtol=1e-6)
    from_moments = analysis.effective_dimension_of_moments(total)
    assert from_moments.dimension == direct.dimension == 2
    assert from_moments.snr == pytest.approx(direct.snr, rel=1e-9, abs=1e-12)
    assert from_moments.redundant == direct.redundant == [[0, 4]]
    assert from_moments.surviving == direct.surviving == stats["surviving"]


def test_a_curved_manifold_of_means_spans_two_directions_but_has_one_dimension():
    rng = np.random.default_rng(6)
    # One parameter t, encoded as latent 0 = t and latent 1 = t^2 (centred): the means lie on
    # a parabola, which spans two linear directions.
    t = rng.uniform(-2, 2, N_CODES)
    mu = np.zeros((N_CODES, 6))
    mu[:, 0], mu[:, 1] = t, t**2 - 4 / 3
    logvar = np.zeros((N_CODES, 6))
    logvar[:, :2] = np.log(SIGNAL_NOISE)
    assert effective_dimension(mu, logvar).dimension == 2
    assert analysis.intrinsic_dimension(mu, logvar) == 1
    # Two independent parameters (case a) and their rotation: no curvature, two dimensions.
    mu, logvar = _two_informative(rng)
    assert analysis.intrinsic_dimension(mu, logvar) == 2
    rotation, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    isotropic = np.full((N_CODES, 6), np.log(SIGNAL_NOISE))
    mu[:, 2:] = 0
    assert analysis.intrinsic_dimension(mu @ rotation.T, isotropic) == 2
    # Means within the noise: none.
    assert analysis.intrinsic_dimension(0.03 * rng.standard_normal((N_CODES, 6)), isotropic) == 0


def test_no_posterior_or_a_diverged_model_has_no_dimension():
    empty = LatentMoments.of(np.zeros((0, 3)), np.zeros((0, 3)))
    found = analysis.effective_dimension_of_moments(empty)
    assert found.dimension == 0 and found.surviving == [] and np.isnan(found.snr).all()
    mu = np.ones((5, 3))
    mu[0, 0] = np.nan
    assert effective_dimension(mu, np.zeros((5, 3)), [0]).dimension == 0


def _principal(signal, noise, rng):
    """Posteriors whose principal directions are the latents: means of these variances,
    posterior variances ``noise``."""
    mu = rng.standard_normal((N_CODES, len(signal))) * np.sqrt(signal)
    return effective_dimension(mu, np.broadcast_to(np.log(noise), mu.shape).copy())


def test_the_factor_counts_the_parameters_of_the_shipped_models():
    rng = np.random.default_rng(5)
    assert SNR_FACTOR == pytest.approx(0.2214, abs=1e-4)
    assert 0.5 * np.log(1 + SNR_FACTOR) == pytest.approx(0.1)  # nat: the survival bar
    # Measured on the shipped SBM model (paper-test, inside the training range): a strong
    # direction, a weak one that is its second parameter (SNR 0.77), collapsed latents.
    sbm = _principal([1.162, 0.391, 0.012, 0.009], [0.001, 0.511, 0.955, 0.972], rng)
    assert sbm.dimension == 2 and sbm.snr[1] == pytest.approx(0.77, rel=0.1)
    # Shipped FBM: two parameters; its largest other direction has SNR 0.033.
    fbm = _principal([1.181, 0.899, 0.03, 0.026], [0.003, 0.027, 0.913, 0.931], rng)
    assert fbm.dimension == 2
    # Issue 15's redundant FBM model (signal 3.16 and 0.71 against noise 0.02, then 0.10
    # against 0.66 and 0.05 against 0.02): its small SNR-2.5 direction counts as a third.
    issue = _principal([3.16, 0.71, 0.10, 0.05], [0.02, 0.02, 0.66, 0.02], rng)
    assert issue.dimension == 3 and issue.snr[3] < SNR_FACTOR


def test_readout_r2_perfect_code_and_noise():
    rng = np.random.default_rng(1)
    alpha = rng.uniform(0.2, 1.8, 4000)
    code = np.stack([np.tanh(alpha - 1), rng.standard_normal(4000)], axis=1)  # smooth, invertible
    assert analysis.readout_r2(code, alpha) > 0.999
    noise = rng.standard_normal((4000, 2))
    # Pure noise: over 100 seeds the held-out R^2 of this 10-term fit measured -0.005 +- 0.004
    # (min -0.020): 0.03 is beyond 5 standard deviations.
    assert abs(analysis.readout_r2(noise, alpha, degree=3)) < 0.03
    assert analysis.readout_r2(np.empty((4000, 0)), alpha) == 0.0


def test_r_squared_is_the_one_r2():
    rng = np.random.default_rng(5)
    truth = rng.standard_normal(1000)
    assert analysis.r_squared(truth, truth) == 1.0
    assert analysis.r_squared(truth, np.full(1000, truth.mean())) == pytest.approx(0.0, abs=1e-12)
    # An estimate off by noise of the truth's own variance explains nothing more than the mean.
    noisy = truth + rng.standard_normal(1000) * truth.std()
    assert analysis.r_squared(truth, noisy) == pytest.approx(0.0, abs=0.15)
    # Missing estimates are left out of the error, not of the variance.
    with_gap = truth.copy()
    with_gap[:10] = np.nan
    assert analysis.r_squared(truth, with_gap) == 1.0
    # readout_r2 is that R^2 on the held-out half of readout.
    code = np.stack([truth + 0.3 * rng.standard_normal(1000)], 1)
    score, predicted, _ = analysis.readout(code, truth)
    assert analysis.readout_r2(code, truth) == analysis.r_squared(truth[score], predicted)


def test_readout_degree_follows_the_signal():
    """Cross-validation keeps every degree the target needs and the readout then reaches the
    noise floor: R^2 = 1 - noise variance / target variance."""
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, (6000, 2))
    noise = 0.05 * rng.standard_normal(6000)
    cubic = x[:, 0] ** 3 - x[:, 0] * x[:, 1] + noise
    assert analysis.choose_degree(x, cubic) >= 3
    wiggly = np.sin(3 * x[:, 0]) + noise  # degree 7 leaves ~1e-3 of residual
    assert analysis.choose_degree(x, wiggly) >= 5
    floor = 1 - 0.05**2 / wiggly.var()
    assert analysis.readout_r2(x, wiggly) == pytest.approx(floor, abs=0.005)
    # Six latents: degrees are capped so the design has at most MAX_READOUT_TERMS columns.
    assert analysis.choose_degree(rng.standard_normal((500, 6)), rng.standard_normal(500)) <= 4


def test_analyze_command_and_the_nll_gap(tmp_path):
    torch.manual_seed(0)
    data = datasets.make_dataset(
        "fbm", alpha=(0.5, 1.5), D=(1e-3, 1e-2), n_per_cell=20, n_positions=60, seed=2
    )
    model = VAE(ModelConfig(scale_equivariant=True, log_scale_mean=float(np.log(0.1)))).eval()
    result = analysis.analyze(
        model, data, progress=False, generation={"n_steps": 300, "max_lag": 100}
    )
    metrics = result.metrics
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
    assert f"effective_dimension: {metrics['effective_dimension']}\n" in result.output
    assert "(" + " ".join(analysis.YARDSTICKS["effective_dimension"].split()[:4]) in result.output


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


def _zeros(data):
    return np.zeros((len(data), 6), np.float32)


def test_generated_statistics_of_a_known_law():
    """The hand-set decoder generates BM of D = STD^2 / 2 whatever the latent, so alpha_g = 1
    and D_g = D exactly in law; tolerances from the sampling spread (4 seeds measured)."""
    model, D = known_law_model(STD), STD**2 / 2
    fbm = datasets.make_dataset("fbm", alpha=(1.0,), D=(D,), n_per_cell=20, seed=0)
    generated = analysis.fbm_generation(model, fbm, _zeros(fbm), n_steps=2000)
    metrics = generated.metrics
    # Measured over seeds 0-3: 0.001-0.015 at lags 1-20 and 0.09-0.12 at lags 380-400 (few
    # windows of 2,000 steps are averaged there).
    assert metrics["alpha_g_error_lags_1_20"] < 0.04
    assert metrics["alpha_g_error_lags_380_400"] < 0.25
    assert metrics["alpha_g_error_lags_100_1000"] < 0.2  # measured 0.008-0.10 (seeds 0-3)
    assert generated.alpha_g.shape == (1, 398)
    sbm = datasets.make_dataset("sbm", alpha=(1.0,), D=(D,), n_per_cell=40, seed=0)
    generated = analysis.sbm_generation(model, sbm, _zeros(sbm))
    assert generated.metrics["alpha_g_error"] < 0.05  # measured 0.002-0.018
    # D(t) from 40 x 399 values: relative standard error 0.011.
    assert generated.diffusion[1.0].generated.mean() / D == pytest.approx(1, abs=0.04)
    bm = datasets.make_dataset("bm", D=(D,), n_per_cell=200, seed=0)
    metrics = analysis.bm_generation(model, bm, _zeros(bm)).metrics
    # log10 of mean(dx^2) / 2 over 399 steps has std sqrt(2 / 399) / ln 10 = 0.031 about the
    # truth, so E|error| = 0.798 * 0.031 = 0.0245, with a standard error of 0.0013 over 200.
    assert metrics["log10_D_g_error"] == pytest.approx(0.0245, abs=0.004)
    # And the measure sees a wrong D: inputs with 4 D give an error of log10 4 = 0.6.
    wrong = datasets.make_dataset("bm", D=(4 * D,), n_per_cell=200, seed=0)
    metrics = analysis.bm_generation(model, wrong, _zeros(wrong)).metrics
    assert metrics["log10_D_g_error"] == pytest.approx(np.log10(4), abs=0.05)


REQUIRED_METRICS = (
    "surviving_latents",
    "kl_per_latent",
    "effective_dimension",
    "effective_dimension_snr",
    "intrinsic_dimension",
    "r2_alpha",
    "r2_log10_D",
    "mig",
    "dci",
    "nll_mean",
    "exact_nll_mean",
    "nll_gap",
    "generation",
    "tamsd_mae_alpha",
    "readout_mae_alpha",
    "readout_degree_alpha",
    "bayes_r2_alpha",
    "bayes_r2_log10_D",
)


def test_the_report_holds_its_figures_and_metrics(tmp_path):
    torch.manual_seed(0)
    data = datasets.make_dataset(
        "sbm", alpha=(0.5, 1.0, 1.5), D=(1e-4, 1e-3, 1e-2), n_per_cell=12, seed=4
    )
    model = VAE(ModelConfig(scale_equivariant=True, log_scale_mean=float(np.log(0.03)))).eval()
    result = analysis.analyze(model, data, progress=False)
    page = write_report(result, tmp_path)
    text = page.read_text()
    figures = sorted(p.name for p in tmp_path.glob("*.png"))
    assert figures == [
        "fig2_latents.png",
        "fig3_sbm.png",
        "fig4_nll.png",
        "fig5_latent_surfaces.png",
        "readout_errors.png",
    ]
    for name in figures:
        assert f'src="{name}"' in text
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for key in REQUIRED_METRICS:
        assert key in metrics, key
    assert f"{metrics['nll_gap']:.4g}" in text
    # Each kind of number stands beside its yardstick.
    kinds = ("kl_per_latent", "effective_dimension", "intrinsic_dimension", "r2", "nll_gap")
    for kind in (*kinds, "mig", "dci", "alpha_g_error"):
        assert html.escape(analysis.YARDSTICKS[kind]) in text, kind
    assert metrics["training_range_recorded"] is False and "assumed" in text
    # The best possible estimate sees SBM's ageing, which the TA-MSD fit ignores (measured
    # R^2 0.95 against 0.03 on these 54 scored trajectories).
    assert metrics["bayes_r2_alpha"]["all_steps"] > 0.9
    assert metrics["tamsd_r2_alpha"] < 0.5
    exact = processes.exact_nll(data.displacements, "sbm", data.alpha, data.D, start=32)
    assert metrics["exact_nll_mean"] == pytest.approx(exact.mean())


def test_a_whole_decoder_model_is_judged_on_every_step_and_generates_from_nothing():
    """The hand-set whole-decoder model is BM of D = STD^2 / 2 at every step: its NLL is that
    of N(0, STD^2) over all 399 steps (none dropped for a receptive field), compared with the
    exact NLL from step 0; FBM of alpha 1 is generated to the far lags and SBM from nothing."""
    model, D = known_whole_model(STD), STD**2 / 2
    fbm = datasets.make_dataset("fbm", alpha=(1.0,), D=(D,), n_per_cell=20, seed=0)
    result = analysis.analyze(model, fbm, progress=False, generation={"n_steps": 2000})
    m = result.metrics
    assert m["first_predicted_step"] == 0
    x = fbm.displacements.astype(np.float64)
    gaussian = 0.5 * np.log(2 * np.pi * STD**2) + x**2 / (2 * STD**2)
    assert m["nll_mean"] == pytest.approx(gaussian.mean(), rel=1e-5)
    exact = processes.exact_nll(fbm.displacements, "fbm", fbm.alpha, fbm.D, start=0)
    assert m["exact_nll_mean"] == pytest.approx(exact.mean())
    assert m["generation"]["alpha_g_error_lags_100_1000"] < 0.2  # as the window model's
    sbm = datasets.make_dataset("sbm", alpha=(1.0,), D=(D,), n_per_cell=40, seed=0)
    generated = analysis.sbm_generation(model, sbm, _zeros(sbm))
    assert generated.metrics["context"].startswith("none")
    assert generated.metrics["alpha_g_error"] < 0.05  # measured 0.002-0.018 (window model)


def test_readouts_by_track_length_beside_the_best_possible_from_the_same_steps():
    """The best possible estimate of D improves with the number of steps and no readout of
    the (random) encoder's latents beats it (measured: 0.57-0.97 against 0.95-0.99); the
    paper's decoder cannot encode fewer than 33 displacements."""
    data = datasets.make_dataset("bm", D=(1e-3, 1e-2, 1e-1), n_per_cell=100, seed=3)
    for model, too_short in ((known_whole_model(STD), []), (known_law_model(STD), [10, 20])):
        model.training_range = {"alpha": [1.0, 1.0], "D": [1e-3, 1e-1]}
        mask = np.ones(len(data), bool)
        latents = analysis.latent_phase(model, data, mask)
        scope = analysis.TrainingRange.of(model)
        rows = analysis.readouts_by_length(model, data, latents, scope)
        assert list(rows) == [10, 20, 50, 100]
        assert [n for n, row in rows.items() if row is None] == too_short
        scored = {n: row for n, row in rows.items() if row is not None}
        assert all(row["r2_log10_D"] < row["bayes_r2_log10_D"] + 0.02 for row in scored.values())
        best = [row["bayes_r2_log10_D"] for row in scored.values()]
        assert best == sorted(best) and best[-1] > 0.95


def test_training_range_given_recorded_or_assumed():
    model = VAE(ModelConfig(scale_equivariant=True)).eval()
    assumed = analysis.TrainingRange.of(model)
    assert not assumed.recorded
    assert assumed.to_dict() == {"alpha": [0.2, 1.8], "D": [pytest.approx(1e-5), 1e-2]}
    model.training_range = {"alpha": [0.5, 1.0], "D": [1e-4, 1e-3]}
    recorded = analysis.TrainingRange.of(model)
    assert recorded.recorded and recorded.alpha == (0.5, 1.0) and recorded.D == (1e-4, 1e-3)
    given = analysis.TrainingRange.of(model, {"alpha": (0.1, 0.2), "D": (1.0, 2.0)})
    assert given.recorded and given.alpha == (0.1, 0.2)
    assert list(recorded.contains("alpha", np.array([0.49, 0.5, 0.75, 1.0, 1.01]))) == [
        False,
        True,
        True,
        True,
        False,
    ]


def test_a_model_is_judged_on_its_own_training_range():
    """A model trained on alpha 0.5-1.0 is judged there: the headline numbers, the range in
    metrics.json and the generation errors. The hand-set decoder generates BM (alpha_g = 1)
    whatever the input, so the FBM error over the inputs of alpha 0.5 and 1.0 is about 0.25,
    and about 0.33 over all three input alphas (what the paper's range would give)."""
    model, D = known_law_model(STD), STD**2 / 2
    model.training_range = {"alpha": [0.5, 1.0], "D": [D / 10, D * 10]}
    data = datasets.make_dataset("fbm", alpha=(0.5, 1.0, 1.5), D=(D,), n_per_cell=8, seed=7)
    result = analysis.analyze(
        model, data, progress=False, generation={"n_steps": 1000, "per_alpha": 8}
    )
    m = result.metrics
    assert m["n_in_training_range"] == 16 and m["n"] == 24
    assert m["training_range"] == model.training_range and m["training_range_recorded"]
    assert result.latents.mask.tolist() == (data.alpha <= 1.0).tolist()
    g = result.generation
    errors = np.abs(g.alpha_g_short - g.alphas)
    assert m["generation"]["alpha_g_error_lags_1_20"] == pytest.approx(errors[:2].mean())
    assert m["generation"]["alpha_g_error_lags_1_20"] == pytest.approx(0.25, abs=0.05)
    # The generation function alone, without a range given, takes the model's as well.
    alone = analysis.fbm_generation(model, data, result.latents.mu, n_steps=1000, per_alpha=8)
    assert alone.metrics == m["generation"]
    # The best possible estimates assume a prior on the training range: alpha in 0.5-1.0.
    bayes = result.readouts.parameters["alpha"].bayes["all_steps"]
    assert bayes.min() >= 0.5 and bayes.max() <= 1.0
    # Without a recorded range: the paper's grid, which holds all three alphas.
    model.training_range = None
    assumed = analysis.analyze(
        model, data, progress=False, generation={"n_steps": 300, "max_lag": 100}
    )
    assert not assumed.metrics["training_range_recorded"]
    assert assumed.metrics["n_in_training_range"] == 24
    # Without the generation check (scripts/seed_study.py): the same numbers, no generation.
    quick = analysis.analyze(model, data, progress=False, check_generation=False)
    assert quick.generation is None and "generation" not in quick.metrics
    assert quick.metrics["kl_per_latent"] == assumed.metrics["kl_per_latent"]


def test_analysis_refuses_bad_test_sets():
    model = VAE(ModelConfig(scale_equivariant=True)).eval()
    two_d = datasets.make_dataset("bm", D=(1e-3,), n_per_cell=4, dim=2)
    with pytest.raises(io.TrajectoryFileError, match="dim 2, the model was trained on dim 1"):
        analysis.analyze(model, two_d, progress=False)
    unlabelled = io.Trajectories(two_d.displacements[:, :1])
    with pytest.raises(io.TrajectoryFileError, match="labelled"):
        analysis.analyze(model, unlabelled, progress=False)


def test_analysis_of_a_set_with_one_D_reads_out_alpha_only():
    data = datasets.make_dataset("fbm", alpha=(0.5, 1.5), D=(1e-3,), n_per_cell=20, seed=6)
    model = VAE(ModelConfig(scale_equivariant=True, log_scale_mean=float(np.log(0.045)))).eval()
    result = analysis.analyze(model, data, progress=False, generation={"n_steps": 500})
    assert "r2_alpha" in result.metrics and "r2_log10_D" not in result.metrics
    assert np.isfinite(result.metrics["dci"]["informativeness"])


def test_latent_meaning_names_what_each_latent_encodes():
    """Hand-made latents: 0 holds alpha, 2 log10 D, 3 the exposure (each with a little noise
    of variance s2), 1 is noise only; the readout from one latent gives R^2 = Var / (Var + s2)
    for its own label (the best a readout of a noisy copy can do) and near 0 for the others."""
    rng = np.random.default_rng(0)
    n = 4000
    factors = {
        "alpha": rng.uniform(0.2, 1.8, n),
        "log10_D": rng.uniform(-5, -2, n),
        "exposure": rng.uniform(0, 1, n),
    }
    noise = {"alpha": 0.05, "log10_D": 0.05, "exposure": 0.01}
    columns = [factors[k] + noise[k] * rng.normal(size=n) for k in ("alpha", "log10_D")]
    mu = np.column_stack(
        [
            columns[0],
            rng.normal(size=n),
            columns[1],
            factors["exposure"] + 0.01 * rng.normal(size=n),
        ]
    )
    meaning = analysis.latent_meaning(mu, [0, 2, 3], factors)
    assert set(meaning) == {"0", "2", "3", "all"}
    for latent, own in (("0", "alpha"), ("2", "log10_D"), ("3", "exposure")):
        for factor, r2 in meaning[latent].items():
            if factor == own:
                variance = factors[own].var()
                # 2,000 scored rows: the R^2's sampling error is ~1e-3
                assert r2 == pytest.approx(variance / (variance + noise[own] ** 2), abs=0.005)
            else:
                assert abs(r2) < 0.03  # independent: chance fits, measured up to 0.011
    assert all(r2 > 0.98 for r2 in meaning["all"].values())
    # The factors of recorded tracks: the error relative to the motion in a frame, also when
    # the tracks were simulated with an absolute one.
    absolute = datasets.make_dataset("fbm", "small", n_per_cell=2, noise=(0.0, 0.01), exposure=1)
    factors = analysis._factors(absolute, np.ones(len(absolute), dtype=bool))
    assert set(factors) == {"alpha", "log10_D", "reduced_noise"}  # the exposure does not vary
    np.testing.assert_allclose(
        factors["reduced_noise"], absolute.labels["noise"] ** 2 / (2 * absolute.D)
    )


def test_generated_fbm_is_judged_against_the_recorded_process():
    """The reference MSD of the FBM generation check is t^alpha for plain inputs and that of
    the recorded process for inputs with localisation error and blur (flatter at short lags:
    its lags 1-20 exponent is below alpha)."""
    from minrep import datasets, stats

    plain = datasets.make_dataset("fbm", alpha=(0.5, 1.5), D=(1e-3,), n_per_cell=2, seed=1)
    lags = np.arange(1, 21)
    rows = np.arange(len(plain))
    np.testing.assert_allclose(
        analysis._exact_fbm_msd(plain, rows, lags), lags[None] ** plain.alpha[:, None], rtol=1e-9
    )
    noisy = datasets.make_dataset(
        "fbm", alpha=(0.5, 1.5), D=(1e-3,), n_per_cell=2, seed=1, reduced_noise=0.5, exposure=1.0
    )
    exponent, _ = stats.fit_power_law(lags, analysis._exact_fbm_msd(noisy, rows, lags))
    assert (exponent < noisy.alpha - 0.05).all()
    # Fig. 3a's exact curve: the fGn correlation, and with the error a more negative lag 1
    half = np.flatnonzero(plain.alpha == 0.5)
    fgn = processes.fgn_autocovariance(0.5, np.arange(6))
    np.testing.assert_allclose(analysis._recorded_autocorrelation(plain, half, 5), fgn / fgn[0])
    recorded = analysis._recorded_autocorrelation(noisy, half, 5)
    assert recorded[1] < fgn[1] / fgn[0] - 0.05
