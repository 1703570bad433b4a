"""Tests of minrep.dimension (through minrep.analysis, which reports it): the effective
dimension of hand-made posteriors of known dimension."""

import numpy as np
import pytest

from minrep import analysis
from minrep.dimension import SNR_FACTOR, LatentMoments, effective_dimension

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
        "a last stage that collapses the copies"
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
