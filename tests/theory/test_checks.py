"""Bad inputs to the theory API are refused where they enter, with a ValueError naming the
argument, before anything runs or is written (issue 15's corpus, theory part; the core and
solver parts are tests/core/test_checks.py, tests/solvers/test_checks.py and
tests/solvers/test_descent.py, the command lines' tests/cli/test_validation.py)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ufmflow as uf

KEY = jax.random.PRNGKey(0)
M4 = np.asarray(uf.candidate_structure("dnc", 4))
S8 = jnp.linspace(0.1, 1.0, 8)

BAD = {
    # stability of structures (Theorem 4.3; theory §4.5)
    "dnc_stability K 6": (lambda: uf.dnc_stability(6, 2.0, 1.0), "K"),
    "dnc_stability K 2.5": (lambda: uf.dnc_stability(2.5, 2.0, 1.0), "K"),
    "dnc_stability K 2": (lambda: uf.dnc_stability(2, 2.0, 1.0), "K"),
    "dnc_stability depth 0.5": (lambda: uf.dnc_stability(8, 0.5, 1.0), "depth"),
    "dnc_stability depth nan": (lambda: uf.dnc_stability(8, math.nan, 1.0), "depth"),
    "dnc_stability depth inf": (lambda: uf.dnc_stability(8, math.inf, 1.0), "depth"),
    "dnc_stability depth str": (lambda: uf.dnc_stability(8, "2", 1.0), "depth"),
    "dnc_stability x -1": (lambda: uf.dnc_stability(8, 2.0, -1.0), "x"),
    "dnc_stability x 0": (lambda: uf.dnc_stability(8, 2.0, 0.0), "x"),
    "dnc_stability x nan": (lambda: uf.dnc_stability(8, 2.0, math.nan), "x"),
    "dnc_stability x inf": (lambda: uf.dnc_stability(8, 2.0, math.inf), "x"),
    "dnc_critical_scale K 6": (lambda: uf.dnc_critical_scale(6, 2.0), "K"),
    "dnc_critical_scale depth list": (lambda: uf.dnc_critical_scale(8, [2.0, 0.5]), "depth"),
    "dnc_critical_scale lo 0": (lambda: uf.dnc_critical_scale(8, 2.0, lo=0.0), "lo"),
    "dnc_critical_scale hi inf": (lambda: uf.dnc_critical_scale(8, 2.0, hi=math.inf), "hi"),
    "dnc_critical_scale xtol 0": (lambda: uf.dnc_critical_scale(8, 2.0, xtol=0.0), "xtol"),
    "dnc_critical_scale maxiter 0": (lambda: uf.dnc_critical_scale(8, 2.0, maxiter=0),
                                     "maxiter"),
    "cross_polytope_critical_scale depth nan": (
        lambda: uf.cross_polytope_critical_scale(8, math.nan), "depth"),
    "cross_polytope_stability v 0": (lambda: uf.cross_polytope_stability(8, 2.0, 1.0, v=0), "v"),
    "structure_stability support": (lambda: uf.structure_stability(8, 2.0, 1.0, [0, 9]),
                                    "support"),
    "log_rate_jacobian depth 0": (lambda: uf.log_rate_jacobian(S8, 0.0), "depth"),
    "structure_point x -1": (lambda: uf.structure_point(8, -1.0), "x"),
    # the reduced dynamics (theory §4.6-4.8)
    "minimal_supports K 6": (lambda: uf.minimal_supports(6), "num_classes"),
    "basins num 0": (lambda: uf.basins_of_attraction(KEY, 8, [1.0], [1.0], 0), "num_directions"),
    "basins depths 0.5": (lambda: uf.basins_of_attraction(KEY, 8, [0.5], [1.0], 4), "depths"),
    "basins depths empty": (lambda: uf.basins_of_attraction(KEY, 8, [], [1.0], 4), "depths"),
    "basins scales -1": (lambda: uf.basins_of_attraction(KEY, 8, [1.0], [-1.0], 4), "scales"),
    "basins K 6": (lambda: uf.basins_of_attraction(KEY, 6, [1.0], [1.0], 4), "num_classes"),
    "basins tau1 0": (lambda: uf.basins_of_attraction(KEY, 8, [1.0], [1.0], 4, tau1=0.0),
                      "tau1"),
    "basins dnc_frac 2": (lambda: uf.basins_of_attraction(KEY, 8, [1.0], [1.0], 4,
                                                          dnc_frac=2.0), "dnc_frac"),
    "rich_get_richer num 0": (lambda: uf.rich_get_richer(KEY, 8, [1.0], [1.0], 0), "num"),
    "rich_get_richer scales 0": (lambda: uf.rich_get_richer(KEY, 8, [1.0], [0.0], 4), "scales"),
    "rich_get_richer depths nan": (lambda: uf.rich_get_richer(KEY, 8, [math.nan], [1.0], 4),
                                   "depths"),
    "rich_get_richer growth 1": (lambda: uf.rich_get_richer(KEY, 8, [2.0], [1.0], 4,
                                                            growth=1.0), "growth"),
    "rich_get_richer K 2": (lambda: uf.rich_get_richer(KEY, 2, [2.0], [1.0], 4), "num_classes"),
    "effective_rank_sweep num 0": (lambda: uf.effective_rank_sweep(KEY, 8, [1.0], [1.0], 0),
                                   "num"),
    "perturb_structure eps nan": (lambda: uf.perturb_structure(KEY, 8, 1.0, math.nan), "eps"),
    "perturb_structure x nan": (lambda: uf.perturb_structure(KEY, 8, math.nan, 1e-3), "x"),
    "perturb_structure K 6": (lambda: uf.perturb_structure(KEY, 6, 1.0, 1e-3), "num_classes"),
    "cross_polytope_mixture delta -1": (lambda: uf.cross_polytope_mixture(8, 1.0, -1.0),
                                        "delta"),
    "cross_polytope_mixture x 0": (lambda: uf.cross_polytope_mixture(8, 0.0, 0.1), "x"),
    "ratio_threshold depth 0.5": (lambda: uf.cross_polytope_ratio_threshold(8, 0.5), "depth"),
    "ratio_threshold K 2": (lambda: uf.cross_polytope_ratio_threshold(2, 2.0), "num_classes"),
    "kl_rate depth 0": (lambda: uf.kl_rate(S8, 0.0), "depth"),
    "hadamard_linearized_field depth 0": (lambda: uf.hadamard_linearized_field(S8, 0.0),
                                          "depth"),
    "direction_distance scalar": (lambda: uf.direction_distance(1.0), "s"),
    "kl_rate s negative": (lambda: uf.kl_rate(-S8, 2.0), "s"),
    "classify_structure dnc_frac 0": (lambda: uf.classify_structure(S8, dnc_frac=0.0),
                                      "dnc_frac"),
    "classify_structure min_tol -1": (lambda: uf.classify_structure(S8, min_tol=-1.0),
                                      "min_tol"),
    # the max-margin objective and the candidates (theory §5.2, §5.4, §5.6)
    "max_margin_objective depth 0.5": (lambda: uf.max_margin_objective(M4, 0.5), "depth"),
    "max_margin_objective depth nan": (lambda: uf.max_margin_objective(M4, math.nan), "depth"),
    "max_margin_objective depth str": (lambda: uf.max_margin_objective(M4, "2"), "depth"),
    "max_margin_objective per_class 0": (lambda: uf.max_margin_objective(M4, 2.0, 0),
                                         "per_class"),
    "max_margin_objective per_class 1.5": (lambda: uf.max_margin_objective(M4, 2.0, 1.5),
                                           "per_class"),
    "max_margin_objective M vector": (lambda: uf.max_margin_objective(np.ones(4), 2.0), "M"),
    "max_margin_objective M 3x4": (lambda: uf.max_margin_objective(np.ones((3, 4)), 2.0), "M"),
    "candidate_structure name": (lambda: uf.candidate_structure("square", 4), "name"),
    "candidate_structure K 2": (lambda: uf.candidate_structure("dnc", 2), "K"),
    "candidate_structure K 3.5": (lambda: uf.candidate_structure("dnc", 3.5), "K"),
    "candidate_structure K nan": (lambda: uf.candidate_structure("dnc", math.nan), "K"),
    "candidate_structure cross_polytope K 5": (
        lambda: uf.candidate_structure("cross_polytope", 5), "K"),
    "candidate_structure hypercube K 6": (lambda: uf.candidate_structure("hypercube", 6), "K"),
    "candidate_objective depth 0": (lambda: uf.candidate_objective("dnc", 4, 0.0), "depth"),
    "candidates_for K 2": (lambda: uf.candidates_for(2), "K"),
    "class_margin vector": (lambda: uf.class_margin(np.ones(3)), "M"),
    "dnc_transition_depth K 2": (lambda: uf.dnc_transition_depth(2), "K"),
    "dnc_transition_depth K str": (lambda: uf.dnc_transition_depth("8"), "K"),
    "best_candidate depth 0.5": (lambda: uf.best_candidate(4, 0.5), "depth"),
    "landscape_map ks 2": (lambda: uf.landscape_map([2], [1.0, 2.0]), "ks"),
    "landscape_map ks empty": (lambda: uf.landscape_map([], [1.0]), "ks"),
    "landscape_map ks 4.5": (lambda: uf.landscape_map([4.5], [1.0]), "ks"),
    "landscape_map depths 0.5": (lambda: uf.landscape_map([4], [0.5]), "depths"),
    "landscape_map depths empty": (lambda: uf.landscape_map([4], []), "depths"),
    "landscape_map depths nan": (lambda: uf.landscape_map([4], [math.nan]), "depths"),
    "landscape_table not a map": (lambda: uf.landscape_table(None), "ds"),
    # numerical max-margin solutions and softmax codes (theory §5.5, §5.7)
    "solve_max_margin K 2": (lambda: uf.solve_max_margin(KEY, 2, 1, 4), "K"),
    "solve_max_margin depth 2.5": (lambda: uf.solve_max_margin(KEY, 4, 2.5, 4), "depth"),
    "solve_max_margin num_starts 0": (lambda: uf.solve_max_margin(KEY, 4, 1, 0), "num_starts"),
    "solve_max_margin width 1": (lambda: uf.solve_max_margin(KEY, 4, 1, 4, width=1), "width"),
    "solve_max_margin lr nan": (lambda: uf.solve_max_margin(KEY, 4, 1, 4, lr=math.nan), "lr"),
    "solve_max_margin rho -1": (lambda: uf.solve_max_margin(KEY, 4, 1, 4, rho=-1.0), "rho"),
    "solve_max_margin chunk 0": (lambda: uf.solve_max_margin(KEY, 4, 1, 4, chunk=0), "chunk"),
    "solve_max_margin rtol 2": (lambda: uf.solve_max_margin(KEY, 4, 1, 4, rtol=2.0), "rtol"),
    "solve_max_margin num_devices 0": (lambda: uf.solve_max_margin(KEY, 4, 1, 4, num_devices=0),
                                       "num_devices"),
    "solve_max_margin num_devices 99": (
        lambda: uf.solve_max_margin(KEY, 4, 1, 4, num_devices=99), "num_devices"),
    "softmax_code width 1": (lambda: uf.softmax_code(KEY, 4, 1, 4), "width"),
    "classify_optimum rtol 0": (lambda: uf.classify_optimum(M4, rtol=0.0), "rtol"),
    "distinct_optima one matrix": (lambda: uf.distinct_optima(M4, 2.0), "Ms"),
    "distinct_optima depth 0": (lambda: uf.distinct_optima(M4[None], 0.0), "depth"),
    # Theorem 3.2: the K-gon measurements and runs (theory §5.8)
    "numerical_rank rtol -1": (lambda: uf.numerical_rank(M4, -1.0), "rtol"),
    "numerical_rank rtol 2": (lambda: uf.numerical_rank(M4, 2.0), "rtol"),
    "gram_factor rank 0": (lambda: uf.gram_factor(M4, 0), "rank"),
    "kgon_measure rtol nan": (lambda: uf.kgon_measure(M4, math.nan), "rtol"),
    "adjacent_angles 2x2": (lambda: uf.adjacent_angles(np.eye(2)), "M"),
    "permute_classes not a permutation": (lambda: uf.permute_classes(M4, [0, 0, 1, 2]),
                                          "order"),
    "circulant_defect zeros": (lambda: uf.circulant_defect(np.zeros((4, 4))), "M"),
    "kgon_runs method": (lambda: uf.kgon_runs(KEY, [4], 2, 1, method="sgd"), "method"),
    "kgon_runs ks 2": (lambda: uf.kgon_runs(KEY, [2], 2, 1), "ks"),
    "kgon_runs ks empty": (lambda: uf.kgon_runs(KEY, [], 2, 1), "ks"),
    "kgon_runs lr 0": (lambda: uf.kgon_runs(KEY, [4], 2, 1, lr=0.0), "lr"),
    "kgon_runs width 0": (lambda: uf.kgon_runs(KEY, [4], 2, 1, width=0), "width"),
    "kgon_runs decay_epochs": (lambda: uf.kgon_runs(KEY, [4], 2, 1, epochs=10, decay_epochs=20),
                               "decay_epochs"),
    "kgon_runs rtol 2": (lambda: uf.kgon_runs(KEY, [4], 2, 1, rtol=2.0), "rtol"),
}


def test_corpus_covers_the_theory_api():
    assert len(BAD) >= 60
    for name in ("dnc_stability", "dnc_critical_scale", "max_margin_objective",
                 "candidate_structure", "solve_max_margin", "landscape_map", "kgon_runs",
                 "basins", "kl_rate"):
        assert any(k.startswith(name) for k in BAD), name


@pytest.mark.parametrize("name", list(BAD))
def test_bad_theory_input_is_refused_naming_the_argument(name, tmp_path, monkeypatch):
    call, argument = BAD[name]
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError) as info:
        call()
    assert type(info.value) is ValueError
    assert str(info.value).startswith(f"{argument} "), str(info.value)
    assert list(tmp_path.iterdir()) == []  # nothing written
