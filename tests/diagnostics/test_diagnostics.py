"""Tests of pyroext.diagnostics against quantities computed directly with Pyro and ArviZ."""

import matplotlib

matplotlib.use("Agg")

import arviz_stats
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import scipy.stats
import torch
from arviz_base import from_dict
from arviz_stats.base import array_stats
from pyro.infer.autoguide import AutoDiagonalNormal, AutoMultivariateNormal, AutoNormal
from pyro.infer.importance import vectorized_importance_weights
from pyro.infer.util import plate_log_prob_sum

from pyroext.diagnostics import (
    VSBCResult,
    khat_from_log_ratios,
    khat_threshold,
    plot_vsbc,
    vi_khat,
    vi_khat_from_model,
    vi_loo,
    vsbc,
)
from pyroext.infer import run_svi
from pyroext.models.linear_regression import model_known_noise

PARTICLES = "num_particles_vectorized"  # plate name used by vectorized_importance_weights


def vi_tree(lp, lq, log_likelihood=None, **posterior):
    """A DataTree laid out as pyroext.arviz.from_pyro_svi exports it: chain=1, draw=S."""
    data = {
        "posterior": {name: np.asarray(value)[None] for name, value in posterior.items()},
        "sample_stats": {"lp": np.asarray(lp)[None], "lq": np.asarray(lq)[None]},
    }
    if log_likelihood is not None:
        data["log_likelihood"] = {"obs": np.asarray(log_likelihood)[None]}
    return from_dict(data, dims={"obs": ["obs_dim"]})


def gaussian_draws(q_scale, num_samples):
    """Draws from q = N(0, q_scale) with log p for the target N(0, 1) and log q."""
    q = dist.Normal(torch.tensor(0.0, dtype=torch.float64), q_scale)
    theta = q.sample((num_samples,))
    return theta.numpy(), scipy.stats.norm.logpdf(theta.numpy()), q.log_prob(theta).numpy()


def normal_mean(num_points):
    """mu ~ N(0, 1), y_i ~ N(mu, 1); samples y when not conditioned."""
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with pyro.plate("data", num_points):
        pyro.sample("obs", dist.Normal(mu, 1.0))


# ---------------------------------------------------------------- k-hat


def test_khat_exact_q_has_constant_weights():
    theta, lp, lq = gaussian_draws(1.0, 4000)
    result = vi_khat(vi_tree(lp, lq, mu=theta))
    assert np.ptp(result.log_weights) < 1e-12
    assert result.khat < 0.5
    assert result.interpretation.startswith("good")
    assert result.num_samples == 4000
    assert result.threshold == 0.7
    assert khat_threshold(1000) == pytest.approx(1 - 1 / 3)


def test_khat_wide_q_is_good():
    theta, lp, lq = gaussian_draws(2.0, 4000)
    result = vi_khat(vi_tree(lp, lq, mu=theta))
    lw = lp - lq
    independent = array_stats.pareto_khat(
        np.exp(lw - lw.max()), chain_axis=None, draw_axis=-1, r_eff=1.0, tail="right"
    )
    assert result.khat == pytest.approx(independent, abs=1e-12)
    assert result.khat < 0.5
    assert result.interpretation.startswith("good")


def test_khat_narrow_q_is_unreliable_and_avoids_sign_trap():
    # The true tail index is 1 - 0.3**2 = 0.91, but single estimates are noisy (0.64-0.96 over
    # seeds at S = 10**4), so the claim is made for the median of five replicates.
    khats = []
    for _ in range(5):
        theta, lp, lq = gaussian_draws(0.3, 10_000)
        result = vi_khat(vi_tree(lp, lq, mu=theta))
        lw = lp - lq
        independent = array_stats.pareto_khat(
            np.exp(lw - lw.max()), chain_axis=None, draw_axis=-1, r_eff=1.0, tail="right"
        )
        assert result.khat == pytest.approx(independent, abs=1e-12)
        _, wrong_sign = array_stats.psislw(lw, r_eff=1.0)
        assert abs(wrong_sign - result.khat) > 1.0
        khats.append(result.khat)
    assert np.median(khats) > 0.7
    assert khat_from_log_ratios(lp - lq).interpretation.startswith("unreliable")


def test_khat_of_ratios_spread_over_thousands_of_nats_is_infinite():
    # Ratios spread over thousands of nats have an enormous tail index; psislw returns NaN once
    # the tail's ratios underflow beside the largest, and NaN must not read as "ok".
    log_ratios = 1000 * np.random.default_rng(0).normal(size=200)
    moderate = khat_from_log_ratios(log_ratios / 10)
    result = khat_from_log_ratios(log_ratios)
    assert moderate.khat > 10 and np.isfinite(moderate.khat)
    assert result.khat == np.inf
    assert result.interpretation.startswith("unreliable")


def test_khat_from_model_linear_regression():
    x = torch.randn(30, 2)
    y = x @ torch.tensor([1.0, -0.5]) + 0.3 + torch.randn(30)
    guide = AutoMultivariateNormal(model_known_noise)
    run_svi(model_known_noise, guide, x, y, num_steps=1500, progress=False, seed=0)
    fitted = vi_khat_from_model(model_known_noise, guide, x, y, num_samples=2000)
    assert fitted.khat < 0.5
    assert fitted.log_weights.shape == (2000,)
    with torch.no_grad():
        guide.scale = guide.scale * 0.3
    shrunk = vi_khat_from_model(model_known_noise, guide, x, y, num_samples=2000)
    assert shrunk.khat > 0.7
    assert shrunk.interpretation.startswith("unreliable")


def test_khat_from_model_matches_tree_built_from_pyro_traces():
    x, y = torch.randn(20, 2), torch.randn(20)
    guide = AutoDiagonalNormal(model_known_noise, init_scale=0.3)
    guide(x, y)  # initialise first, so that both computations see the same random stream
    pyro.set_rng_seed(1)
    direct = vi_khat_from_model(
        model_known_noise, guide, x, y, num_samples=500, max_plate_nesting=1
    )
    pyro.set_rng_seed(1)
    with torch.no_grad():
        _, model_trace, guide_trace = vectorized_importance_weights(
            model_known_noise, guide, x, y, num_samples=500, max_plate_nesting=1
        )
        particles = guide_trace.plate_to_symbol[PARTICLES]
        lp = plate_log_prob_sum(model_trace, particles).numpy()
        lq = plate_log_prob_sum(guide_trace, particles).numpy()
    from_tree = vi_khat(vi_tree(lp, lq, b=model_trace.nodes["b"]["value"].reshape(-1).numpy()))
    np.testing.assert_allclose(from_tree.log_weights, direct.log_weights, rtol=1e-6)
    assert from_tree.khat == pytest.approx(direct.khat, abs=1e-4)


def test_khat_rejects_bad_input():
    theta, lp, lq = gaussian_draws(1.0, 100)
    tree = from_dict({"sample_stats": {"lp": lp[None]}})
    with pytest.raises(ValueError, match="missing: lq"):
        vi_khat(tree)
    with pytest.raises(ValueError, match="at least 30 draws"):
        vi_khat(vi_tree(lp[:20], lq[:20], mu=theta[:20]))
    with pytest.raises(ValueError, match="NaN"):
        khat_from_log_ratios(np.full(100, np.nan))
    with pytest.raises(ValueError, match=r"num_samples=10 must be an integer >= 30"):
        vi_khat_from_model(normal_mean, AutoNormal(normal_mean), 5, num_samples=10)
    with pytest.raises(ValueError, match="num_samples"):
        khat_threshold(1)


# ---------------------------------------------------------------- LOO


def exact_posterior_tree(y, q_scale, num_samples):
    """Draws mu from q = N(posterior mean, q_scale * posterior sd) and records what
    from_pyro_svi would: lp, lq and the pointwise log likelihood, all from Pyro traces."""
    precision = 1.0 + len(y)
    loc, scale = y.sum() / precision, q_scale * precision**-0.5

    def guide(num_points):
        pyro.sample("mu", dist.Normal(loc, scale))

    model = pyro.condition(normal_mean, data={"obs": y})
    with torch.no_grad():
        _, model_trace, guide_trace = vectorized_importance_weights(
            model, guide, len(y), num_samples=num_samples, max_plate_nesting=1
        )
    particles = guide_trace.plate_to_symbol[PARTICLES]
    return vi_tree(
        lp=plate_log_prob_sum(model_trace, particles).numpy(),
        lq=plate_log_prob_sum(guide_trace, particles).numpy(),
        log_likelihood=model_trace.nodes["obs"]["log_prob"].numpy(),
        mu=guide_trace.nodes["mu"]["value"].reshape(-1).numpy(),
    )


@pytest.mark.parametrize("q_scale", [1.0, 1.5])
def test_vi_loo_matches_exact_posterior_loo(q_scale):
    y = 1.0 + torch.randn(20, dtype=torch.float64)
    exact = arviz_stats.loo(exact_posterior_tree(y, 1.0, 2000))
    tree = exact_posterior_tree(y, q_scale, 2000)
    result = vi_loo(tree)
    assert result.elpd_i.shape == (20,)
    assert abs(result.elpd - exact.elpd) < 0.2 * exact.se
    assert (result.pareto_k.values <= result.good_k).all()
    if q_scale > 1:  # uncorrected LOO on the too-wide draws is visibly off: the correction acts
        assert abs(arviz_stats.loo(tree).elpd - exact.elpd) > 0.3 * exact.se


def test_vi_loo_explains_missing_inputs():
    y = torch.randn(10, dtype=torch.float64)
    tree = exact_posterior_tree(y, 1.0, 200)
    without_lp = tree.copy()
    without_lp["sample_stats"] = tree["sample_stats"].to_dataset().drop_vars("lp")
    with pytest.raises(ValueError, match="missing: lp"):
        vi_loo(without_lp)
    without_log_lik = tree.copy()
    del without_log_lik["log_likelihood"]
    with pytest.raises(ValueError, match="log_likelihood group"):
        vi_loo(without_log_lik)
    stats, log_lik = tree["sample_stats"], tree["log_likelihood"]
    flat_tree = from_dict(
        {
            "sample_stats": {"lp": stats["lp"].values[0], "lq": stats["lq"].values[0]},
            "log_likelihood": {"obs": log_lik["obs"].values[0]},
        },
        sample_dims=["sample"],
    )
    with pytest.raises(ValueError, match=r"\('chain', 'draw'\)"):
        vi_loo(flat_tree)


# ---------------------------------------------------------------- VSBC


def fast_fit(model, guide, *args, num_steps):
    run_svi(
        model,
        guide,
        *args,
        num_steps=num_steps,
        optim=pyro.optim.Adam({"lr": 0.05}),
        progress=False,
    )


def biased_fit(model, guide, *args, num_steps):
    """Fits, then moves the guide mean up by one posterior standard deviation."""
    fast_fit(model, guide, *args, num_steps=num_steps)
    with torch.no_grad():
        guide.locs.mu += guide.scales.mu


@pytest.mark.slow
def test_vsbc_calibrated_for_exact_family_guide():
    result = vsbc(
        normal_mean,
        AutoNormal,
        10,
        num_simulations=40,
        num_steps=200,
        num_samples=1000,
        fit=fast_fit,
        seed=0,
    )
    assert list(result.pit) == ["mu"]
    assert result.pit["mu"].shape == (40,)
    assert ((result.pit["mu"] >= 0) & (result.pit["mu"] <= 1)).all()
    assert result.uniformity_pvalue["mu"] > 0.01
    assert result.symmetry_pvalue["mu"] > 0.01


@pytest.mark.slow
def test_vsbc_detects_biased_guide():
    result = vsbc(
        normal_mean,
        AutoNormal,
        10,
        num_simulations=40,
        num_steps=200,
        num_samples=1000,
        fit=biased_fit,
        seed=0,
    )
    assert result.uniformity_pvalue["mu"] < 0.01
    assert result.symmetry_pvalue["mu"] < 0.01
    assert np.median(result.pit["mu"]) < 0.5  # the guide sits above the truth


def test_vsbc_default_fit_names_restores_state_and_repeats():
    x = torch.randn(15, 2)
    pyro.param("keep", torch.tensor(3.0))
    pyro.set_rng_seed(5)
    expected_next = torch.rand(())
    pyro.set_rng_seed(5)
    first = vsbc(
        model_known_noise, AutoNormal, x, num_simulations=3, num_steps=5, num_samples=50, seed=7
    )
    assert torch.rand(()) == expected_next
    assert pyro.param("keep").item() == 3.0
    assert list(first.pit) == ["w[0]", "w[1]", "b"]
    assert all(values.shape == (3,) for values in first.truth.values())
    again = vsbc(
        model_known_noise, AutoNormal, x, num_simulations=3, num_steps=5, num_samples=50, seed=7
    )
    np.testing.assert_array_equal(first.pit["w[1]"], again.pit["w[1]"])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_simulations": 1}, "num_simulations=1 must be an integer >= 2"),
        ({"num_steps": 0}, "num_steps=0 must be an integer >= 1"),
        ({"num_samples": 0}, "num_samples=0 must be an integer >= 1"),
        ({"seed": -1}, "seed=-1 must be an integer >= 0"),
        ({"observed_site": "y"}, "observed_site 'y' is not sampled"),
    ],
)
def test_vsbc_rejects_bad_input(options, message):
    with pytest.raises(ValueError, match=message):
        vsbc(normal_mean, AutoNormal, 10, **options)


def test_vsbc_rejects_observed_site_fixed_by_arguments():
    x, y = torch.randn(5, 2), torch.randn(5)
    with pytest.raises(ValueError, match="y=None"):
        vsbc(model_known_noise, AutoNormal, x, y, num_simulations=2, num_steps=1)


def test_plot_vsbc_writes_png(tmp_path):
    rng = np.random.default_rng(0)
    pit = {"mu": rng.uniform(size=40), "w[0]": rng.uniform(size=40) ** 2}
    result = VSBCResult(pit=pit, truth=pit, uniformity_pvalue={}, symmetry_pvalue={})
    path = plot_vsbc(result, tmp_path / "vsbc.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
