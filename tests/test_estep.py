"""E-step of cvpo.py: the dual (6) against an independent solve, and the weights (5)."""

import dataclasses

import numpy as np
import pytest
import scipy.optimize
import torch

import cvpo


def brute_force_min(qr, qc, estep_kl, qc_threshold):
    """Independent minimum of g: a dense log-grid, refined by Nelder-Mead in log-space, no gradient used."""
    g = lambda eta, lam: cvpo.dual_function((eta, lam), qr, qc, estep_kl, qc_threshold)[0]  # noqa: E731
    etas = np.logspace(-4, 4, 161)
    lams = np.concatenate([[0.0], np.logspace(-4, 4, 160)])
    values = np.array([[g(e, l) for l in lams] for e in etas])
    i, j = np.unravel_index(values.argmin(), values.shape)
    best = values[i, j]
    for lam0 in {lams[j], max(lams[j], 1e-4)}:
        res = scipy.optimize.minimize(lambda x: g(np.exp(np.clip(x[0], -30, 30)), np.exp(np.clip(x[1], -30, 30)) if lam0 > 0 else 0.0),
                                      [np.log(etas[i]), np.log(max(lam0, 1e-4))], method="Nelder-Mead",
                                      options=dict(xatol=1e-10, fatol=1e-12, maxiter=4000))
        best = min(best, res.fun)
    return best


@pytest.mark.parametrize("seed", range(8))
def test_dual_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n, k = 16, 8
    qr = rng.normal(rng.uniform(-5, 20), rng.uniform(0.1, 3), (n, k))
    qc = rng.uniform(0, 4, (n, k)) * rng.uniform(0.2, 2)
    # (4) is feasible only if the KL budget can buy the cost cut: a threshold above the average particle cost
    # (constraint slack) or below it by at most half of what a KL of delta can move, ~sqrt(2 delta) std
    estep_kl = rng.choice([0.01, 0.05, 0.1])
    qc_threshold = qc.mean() - rng.uniform(-1, 0.5) * np.sqrt(2 * estep_kl) * qc.std(1).mean()
    eta, lam = cvpo.solve_dual(qr, qc, estep_kl, qc_threshold, np.array([1.0, 1.0]), lam_max=1e4)
    g_solver = cvpo.dual_function((eta, lam), qr, qc, estep_kl, qc_threshold)[0]
    g_brute = brute_force_min(qr, qc, estep_kl, qc_threshold)
    assert g_solver <= g_brute + 1e-3 * abs(g_brute) + 1e-9


def test_dual_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    qr, qc = rng.normal(size=(10, 6)), rng.uniform(0, 2, (10, 6))
    x = np.array([0.7, 0.4])
    _, grad = cvpo.dual_function(x, qr, qc, 0.05, 1.0)
    h = 1e-6
    for i in range(2):
        step = np.eye(2)[i] * h
        fd = (cvpo.dual_function(x + step, qr, qc, 0.05, 1.0)[0] - cvpo.dual_function(x - step, qr, qc, 0.05, 1.0)[0]) / (2 * h)
        assert grad[i] == pytest.approx(fd, rel=1e-4, abs=1e-6)


class Table(torch.nn.Module):
    """A critic returning a fixed function of the action, so the E-step sees chosen Q tables."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, obs, act):
        return self.fn(obs, act)


def run_e_step(qr_fn, qc_fn, qc_threshold, n=32, k=64, seed=0):
    torch.manual_seed(seed)
    actor = cvpo.Actor(3, 2)
    obs = torch.randn(n, 3)
    args = dataclasses.replace(cvpo.resolve_args(cvpo.Args()), num_particles=k, estep_kl=0.1)
    return cvpo.e_step(obs, actor, (Table(qr_fn), Table(qr_fn), Table(qc_fn)), np.array([1.0, 1.0]), qc_threshold, args)


def test_weights_are_softmax_over_particles():
    particles, weights, eta, lam = run_e_step(lambda s, a: a[:, 0] * 3, lambda s, a: (a[:, 1] + 1), 1.0)
    assert weights.shape == particles.shape[:2]
    assert torch.allclose(weights.sum(1), torch.ones(weights.shape[0]), atol=1e-5)
    executed = particles.clamp(-1, 1)  # the critics score the action the env executes
    expected = torch.softmax((executed[..., 0] * 3 - lam * (executed[..., 1] + 1)) / eta, dim=1)
    assert torch.allclose(weights, expected, atol=1e-6)
    assert (weights >= 0).all()


def test_critics_score_clamped_actions_while_particles_keep_their_spread():
    seen = []
    particles, _, _, _ = run_e_step(lambda s, a: seen.append(a) or a[:, 0], lambda s, a: 0 * a[:, 0], 1.0)
    # an untrained actor has std ~1, so some particles fall outside the action box [-1, 1]
    assert particles.abs().max() > 1
    assert max(a.abs().max().item() for a in seen) <= 1
    # clamping would pile particles on +-1 and shrink their spread, which the M-step would copy into the std
    assert particles.var(1).mean() > particles.clamp(-1, 1).var(1).mean()


def test_lam_zero_when_cost_far_below_threshold():
    _, _, _, lam = run_e_step(lambda s, a: a[:, 0], lambda s, a: 0.01 * (a[:, 1] + 1), 10.0)
    assert lam == pytest.approx(0.0, abs=1e-8)


def test_weights_move_to_low_cost_particles_when_cost_above_threshold():
    # reward prefers a[0] high; cost is high for a[1] > 0 and exceeds the threshold on average
    qc_fn = lambda s, a: 4.0 * (a[:, 1] > 0).float()  # noqa: E731
    particles, weights, eta, lam = run_e_step(lambda s, a: 0.1 * a[:, 0], qc_fn, 1.5)
    assert lam > 0
    qc = 4.0 * (particles[..., 1] > 0).float()
    weighted_cost = (weights * qc).sum(1).mean()
    assert weighted_cost < qc.mean() - 0.4
    assert weighted_cost <= 1.5 + 1e-2  # the cost constraint of (4) holds at the optimum


@pytest.mark.parametrize("qr_fn,qc_fn", [
    (lambda s, a: torch.zeros(len(a)), lambda s, a: torch.zeros(len(a))),
    (lambda s, a: torch.full((len(a),), 1e4), lambda s, a: torch.full((len(a),), 1e4)),
    (lambda s, a: 1e4 * a[:, 0], lambda s, a: 1e4 * (a[:, 1] + 1)),
])
def test_degenerate_tables_give_finite_values(qr_fn, qc_fn):
    _, weights, eta, lam = run_e_step(qr_fn, qc_fn, 1.5)
    assert np.isfinite(eta) and eta > 0 and np.isfinite(lam) and lam >= 0
    assert torch.isfinite(weights).all()
    assert torch.allclose(weights.sum(1), torch.ones(weights.shape[0]), atol=1e-5)


def test_infeasible_cost_bound_stops_lam_at_its_cap():
    # every particle costs more than the threshold: the dual is unbounded in lam, so lam sits at lam_max
    rng = np.random.default_rng(1)
    qr, qc = rng.normal(size=(8, 16)), 5 + rng.uniform(size=(8, 16))
    eta, lam = cvpo.solve_dual(qr, qc, 0.1, 1.0, np.array([1.0, 1.0]), lam_max=20.0)
    assert lam == pytest.approx(20.0) and np.isfinite(eta) and eta > 0


def weights_kl(qr, qc, eta, lam):
    """KL(q || uniform) of the weights (5), averaged over states."""
    z = (qr - lam * qc) / eta
    q = np.exp(z - z.max(1, keepdims=True))
    q /= q.sum(1, keepdims=True)
    return float((q * np.log(q * q.shape[1] + 1e-300)).sum(1).mean())


def interior_lam_table(seed=3, n=64, k=32, scale=1.0):
    """Q tables whose optimal lam lies inside (0, lam_max): the cost bound binds and can be met."""
    rng = np.random.default_rng(seed)
    qr = scale * rng.normal(0, 1, (n, k))
    qc = scale * (rng.uniform(0, 1, (n, k)) + 0.5 * qr / scale)
    qc_threshold = qc.mean() - 0.3 * np.sqrt(2 * 0.1) * qc.std(1).mean()
    return qr, qc, qc_threshold


@pytest.mark.parametrize("x0", [(1e-3, 0.0), (1e-6, 20.0), (1e6, 0.0), (100.0, 20.0)])
def test_dual_solve_from_far_warm_starts_on_large_q_tables(x0):
    """Q tables of scale 1e4 (an early critic's): every warm start, however far off, ends where the weights' KL
    equals delta, and at the same (eta, lam) as a cold start."""
    rng = np.random.default_rng(0)
    qr, qc = 1e4 * rng.normal(size=(64, 32)), 1e4 * rng.uniform(size=(64, 32))
    eta, lam = cvpo.solve_dual(qr, qc, 0.1, 1e9, np.array(x0))
    assert weights_kl(qr, qc, eta, lam) == pytest.approx(0.1, rel=1e-3)
    cold = cvpo.solve_dual(qr, qc, 0.1, 1e9, np.array([1.0, 0.0]))
    assert eta == pytest.approx(cold[0], rel=1e-3) and lam == pytest.approx(cold[1], abs=1e-6)
    assert max(cvpo.dual_residuals((eta, lam), qr, qc, 0.1, 1e9, 20.0)) < 1e-3


@pytest.mark.parametrize("scale", [1.0, 1e4])
@pytest.mark.parametrize("x0", [(100.0, 20.0), (1e-3, 0.0), (1.0, 1.0)])
def test_dual_solve_meets_both_conditions_with_lam_inside_the_box(scale, x0):
    qr, qc, qc_threshold = interior_lam_table(scale=scale)
    eta, lam = cvpo.solve_dual(qr, qc, 0.1, qc_threshold, np.array([x0[0] * scale, x0[1]]))
    assert 0 < lam < 20
    assert weights_kl(qr, qc, eta, lam) == pytest.approx(0.1, rel=1e-3)
    z = (qr - lam * qc) / eta
    q = np.exp(z - z.max(1, keepdims=True))
    q /= q.sum(1, keepdims=True)
    assert (q * qc).sum(1).mean() == pytest.approx(qc_threshold, abs=1e-3 * qc.std())  # the cost bound binds
    g = cvpo.dual_function((eta, lam), qr, qc, 0.1, qc_threshold)[0]
    assert g <= brute_force_min(qr / scale, qc / scale, 0.1, qc_threshold / scale) * scale + 1e-6 * scale


@pytest.mark.parametrize("bad", ["reward", "cost"])
def test_non_finite_q_table_stops_with_one_line_naming_the_critic(bad):
    nan = lambda s, a: torch.full((len(a),), float("nan"))  # noqa: E731
    finite = lambda s, a: a[:, 0]  # noqa: E731
    with pytest.raises(cvpo.TrainingError) as stop:  # the training loop prints it as the run's one-line error
        run_e_step(nan if bad == "reward" else finite, nan if bad == "cost" else finite, 1.0)
    message = str(stop.value)
    assert f"the {bad} critic diverged" in message and "\n" not in message
