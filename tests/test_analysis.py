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
    # Each trajectory's NLL is its own: batches of 7 (the last one of 3) give the same.
    assert analysis.model_nll(model, data, batch_size=7) == pytest.approx(nll, rel=1e-5)
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
