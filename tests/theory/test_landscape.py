"""The asymptotic landscape (theory §5): max-margin objective, candidate structures and their
closed forms, the Theorem 3.1 map, the numerical max-margin solver and softmax codes."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ufmflow as uf

# ---------------------------------------------------------------- objective and candidates


@pytest.mark.parametrize("K", [3, 4, 5, 6, 7, 8, 16])
def test_candidates_have_unit_margin(K):
    for name in uf.candidates_for(K):
        M = uf.candidate_structure(name, K)
        assert M.shape == (K, K)
        assert float(uf.class_margin(M)) == pytest.approx(1.0, abs=1e-12), name


def test_closed_forms_match_numerical_objective_up_to_1024():
    depths = jnp.array([1.0, 1.5, 3.0, 7.25, 16.0])
    for K in (3, 5, 64, 256, 1024):
        # one SVD of 1024 x 1024 (~5-10 s on a loaded CPU): the circle; the others at K = 256
        names = ("circle",) if K == 1024 else uf.candidates_for(K)
        Ms = jnp.stack([jnp.asarray(uf.candidate_structure(n, K)) for n in names])
        num = np.asarray(uf.max_margin_objective(Ms[:, None], depths[None, :], per_class=3))
        cf = np.stack([uf.candidate_objective(n, K, np.asarray(depths), per_class=3)
                       for n in names])
        np.testing.assert_allclose(num, cf, rtol=1e-10, err_msg=f"K={K}")


def test_closed_forms_named_in_docs():
    # DNC (L+1)(K-1) n^{1/(L+1)}; cross-polytope (L+1) K/2 2^{2/(L+1)}; circle 2 s^{2/(L+1)}
    K, L, n = 10, 3.0, 2
    p = 2 / (L + 1)
    assert uf.candidate_objective("dnc", K, L, n) == pytest.approx((L + 1) * (K - 1) * n ** (p / 2))
    assert uf.candidate_objective("cross_polytope", K, L) == pytest.approx((L + 1) * K / 2 * 2**p)
    s = K / (2 * (1 - math.cos(2 * math.pi / K)))
    assert uf.candidate_objective("circle", K, L) == pytest.approx((L + 1) * 2 * s**p)
    assert uf.candidate_objective("cross_polytope_odd", 11, L) == pytest.approx(
        (L + 1) * (5 * 2**p + (10 / 11) ** (p / 2)))
    assert uf.candidate_objective("hypercube", 16, L) == pytest.approx((L + 1) * 4 * 8**p)


def test_objective_invariances_and_bad_margins():
    rng = np.random.default_rng(0)
    K = 6
    M = uf.candidate_structure("cross_polytope", K) + 0.05 * rng.standard_normal((K, K))
    base = float(uf.max_margin_objective(M, 2.5))
    perm = rng.permutation(K)
    assert float(uf.max_margin_objective(M[perm][:, perm], 2.5)) == pytest.approx(base, rel=1e-12)
    assert float(uf.max_margin_objective(7.3 * M, 2.5)) == pytest.approx(base, rel=1e-12)
    # a per-column shift leaves margins unchanged but not the singular values: no invariance
    assert float(uf.max_margin_objective(np.eye(K), 1.0)) == pytest.approx(2 * K)
    assert float(uf.max_margin_objective(-np.eye(K), 2.0)) == math.inf
    assert float(uf.max_margin_objective(np.zeros((K, K)), 2.0)) == math.inf
    assert math.isnan(float(uf.max_margin_objective(np.full((K, K), np.nan), 2.0)))
    # jit + vmap + grad are fine (the grad is finite even with zero singular values)
    f = jax.jit(jax.vmap(uf.max_margin_objective, in_axes=(0, None)))
    Ms = jnp.stack([jnp.asarray(uf.candidate_structure(n, K)) for n in uf.candidates_for(K)])
    np.testing.assert_allclose(f(Ms, 3.0), [uf.candidate_objective(n, K, 3.0)
                                            for n in uf.candidates_for(K)], rtol=1e-12)
    g = jax.grad(uf.max_margin_objective)(jnp.asarray(uf.candidate_structure("circle", K)), 4.0)
    assert np.all(np.isfinite(np.asarray(g)))


def test_candidate_errors():
    with pytest.raises(ValueError, match="name"):
        uf.candidate_structure("simplex", 4)
    with pytest.raises(ValueError, match="K"):
        uf.candidate_structure("dnc", 2)
    with pytest.raises(ValueError, match="cross_polytope_odd"):
        uf.candidate_structure("cross_polytope", 5)
    with pytest.raises(ValueError, match="K must be odd"):
        uf.candidate_structure("cross_polytope_odd", 6)
    with pytest.raises(ValueError, match="power of two"):
        uf.candidate_structure("hypercube", 12)
    with pytest.raises(ValueError, match="depth"):
        uf.max_margin_objective(np.eye(3), 0.5)
    with pytest.raises(ValueError, match="M must have shape"):
        uf.max_margin_objective(np.eye(3)[:2], 2.0)
    with pytest.raises(ValueError, match="depth"):
        uf.candidate_objective("dnc", 4, 0.0)


# ---------------------------------------------------------------- Theorem 3.1 map


def test_transition_depth_closed_forms():
    # theory §5.6: the cross-polytope (and its odd analogue) is always the first to beat DNC
    assert uf.dnc_transition_depth(3) == (math.inf, "")
    for K in range(4, 65):
        ls, by = uf.dnc_transition_depth(K)
        if K % 2 == 0:
            assert ls == pytest.approx(2 / math.log2(2 - 2 / K) - 1, rel=1e-12)
        else:  # pairs + centred singleton: between the pairs + [1] bound and K + 1's value
            assert 2 / math.log2(2 - 2 / (K + 1)) - 1 < ls < 2 / math.log2(2 - 2 / (K - 1)) - 1
        assert by == ("cross_polytope" if K % 2 == 0 else "cross_polytope_odd")
        # the objectives tie at L*, DNC is better just below and worse just above
        d = uf.candidate_objective(by, K, ls) / uf.candidate_objective("dnc", K, ls)
        assert d == pytest.approx(1.0, abs=1e-12)
        assert uf.best_candidate(K, ls * (1 - 1e-6)) == "dnc"
        assert uf.best_candidate(K, ls * (1 + 1e-6)) != "dnc"
    # Theorem 3.1 at integer depths: DNC loses for K = 4, 5 from L = 3, for K >= 6 from L = 2
    assert [math.ceil(uf.dnc_transition_depth(K)[0]) for K in (4, 5, 6, 7, 64)] == [3, 3, 2, 2, 2]
    # circle vs DNC alone: 2 s^p = K - 1
    K = 9
    s = K / (2 * (1 - math.cos(2 * math.pi / K)))
    ls_circle = 2 * math.log(s) / math.log((K - 1) / 2) - 1
    v = uf.candidate_objective("circle", K, ls_circle) / uf.candidate_objective("dnc", K, ls_circle)
    assert v == pytest.approx(1.0, abs=1e-12)


def test_landscape_map_dataset_and_table():
    ds = uf.landscape_map(range(3, 11), depths=[1.0, 2.0, 3.0, 8.0, 16.0])
    assert ds.best_name.sel(depth=1.0).values.tolist() == ["dnc"] * 8
    assert ds.best_name.sel(K=4, depth=3.0).item() == "cross_polytope"
    assert ds.best_name.sel(K=10, depth=16.0).item() == "circle"
    np.testing.assert_allclose(ds.transition_depth.sel(K=6), 2 / math.log2(2 - 2 / 6) - 1)
    # the map's winner really is the argmin of the closed forms
    obj = ds.objective.values
    np.testing.assert_array_equal(ds.best.values, np.nanargmin(obj, axis=0))
    text = uf.landscape_table(ds)
    assert "L*" in text and len(text.splitlines()) == 8 + 3
    with pytest.raises(ValueError, match="ks"):
        uf.landscape_map([2, 3])


# ---------------------------------------------------------------- numerical max-margin solver

_FAST = dict(outer=30, inner=100)  # enough at depth 1 (benign landscape, theory §5.6)


@pytest.fixture(scope="session")
def depth1_runs():
    # one compile (pad_to=8) for every K = 3..8
    return {K: uf.solve_max_margin(jax.random.PRNGKey(K), K, 1, 12, pad_to=8, **_FAST)
            for K in range(3, 9)}


def test_depth1_best_is_dnc(depth1_runs):
    for K, res in depth1_runs.items():
        best = res["optima"][0]
        assert best["structure"] == "dnc", K
        assert best["rank"] == K - 1
        assert best["objective"] == pytest.approx(2 * (K - 1), rel=1e-6)  # _FAST: ~1e-7
        assert res["failed"] == 0
        assert sum(o["count"] for o in res["optima"]) == 12


@pytest.fixture(scope="session")
def depth4_runs():
    # K = 4, 5 at depth 4 > L*(4) = 2.42 > L*(5) = 2.24: one compile (pad_to=5)
    return {K: uf.solve_max_margin(jax.random.PRNGKey(7), K, 4, 24, pad_to=5) for K in (4, 5)}


def test_beyond_transition_a_better_structure_is_found(depth4_runs):
    dnc4 = uf.candidate_objective("dnc", 4, 4)
    best = depth4_runs[4]["optima"][0]
    assert best["structure"] == "cross_polytope" and best["rank"] == 2
    # the solver's optimum equals the closed form (Lemma D.7 value of a unit-margin matrix)
    assert best["objective"] == pytest.approx(uf.candidate_objective("cross_polytope", 4, 4),
                                              rel=1e-6)
    assert best["objective"] < dnc4
    assert best["normalized_margin"] == pytest.approx(best["objective"] ** -2.5)
    names = {o["structure"]: o for o in depth4_runs[5]["optima"]}
    assert depth4_runs[5]["optima"][0]["structure"] == "circle"
    assert names["circle"]["objective"] == pytest.approx(uf.candidate_objective("circle", 5, 4),
                                                         rel=1e-6)
    # the odd analogue (pairs + centred singleton) is a local optimum the solver finds too
    assert "cross_polytope_odd" in names
    assert names["cross_polytope_odd"]["objective"] == pytest.approx(
        uf.candidate_objective("cross_polytope_odd", 5, 4), rel=1e-6)
    for res in depth4_runs.values():
        assert sum(o["frequency"] for o in res["optima"]) == pytest.approx(1.0)


def test_dedup_and_classification_are_permutation_and_scale_invariant():
    rng = np.random.default_rng(3)
    K = 6
    Ms = []
    for name in ("dnc", "cross_polytope", "circle"):
        M = uf.candidate_structure(name, K)
        for _ in range(3):
            perm = rng.permutation(K)
            Ms.append(rng.uniform(0.5, 3) * M[perm][:, perm])
            assert uf.classify_optimum(Ms[-1]) == name
    groups = uf.distinct_optima(np.stack(Ms), 3.0)
    assert [g["count"] for g in groups] == [3, 3, 3]
    np.testing.assert_allclose(sorted(g["objective"] for g in groups),
                               sorted(uf.candidate_objective(n, K, 3.0)
                                      for n in ("dnc", "cross_polytope", "circle")))
    assert uf.classify_optimum(np.eye(K) + 0.3 * rng.standard_normal((K, K))) == "other"


def test_solver_errors():
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="depth"):
        uf.solve_max_margin(key, 4, 2.5, 4)
    with pytest.raises(ValueError, match="width"):
        uf.solve_max_margin(key, 4, 1, 4, width=1)
    with pytest.raises(ValueError, match="pad_to"):
        uf.solve_max_margin(key, 5, 1, 4, pad_to=4)
    with pytest.raises(ValueError, match="K"):
        uf.solve_max_margin(key, 2, 1, 4)


# ---------------------------------------------------------------- softmax codes


def test_softmax_code_width2_is_the_k_gon():
    for K in range(3, 9):
        code = uf.softmax_code(jax.random.PRNGKey(K), K, 2, 12, pad_to=8)
        # K = 3: the triangle is DNC; K = 4: the square is the cross-polytope (same matrices)
        assert code["structure"] == {3: "dnc", 4: "cross_polytope"}.get(K, "circle")
        assert code["rank"] == 2
        assert code["objective"] == pytest.approx(uf.candidate_objective("circle", K, 1),
                                                  rel=1e-6)
        M = uf.candidate_structure("circle", K)
        assert code["geometric_margin"] == pytest.approx(1 / np.linalg.norm(M), rel=1e-6)
        assert code["normalized_margin"] == pytest.approx(1 / code["objective"])


def test_softmax_code_width_k_minus_1_is_dnc():
    code = uf.softmax_code(jax.random.PRNGKey(0), 6, 5, 12)
    assert code["structure"] == "dnc"
    assert code["objective"] == pytest.approx(uf.candidate_objective("dnc", 6, 1), rel=1e-6)
