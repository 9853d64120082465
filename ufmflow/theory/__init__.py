"""The paper's analyses: stability of structures (Thm 4.3), dynamics near the origin and KL to NC
(Thm 4.4, App. C-E), width (Thm 4.5). Imports `core` and `solvers`.
"""

from ._dynamics import STRUCTURE_NAMES as STRUCTURE_NAMES
from ._dynamics import basins_of_attraction as basins_of_attraction
from ._dynamics import classify_structure as classify_structure
from ._dynamics import cross_polytope_mixture as cross_polytope_mixture
from ._dynamics import cross_polytope_ratio_threshold as cross_polytope_ratio_threshold
from ._dynamics import direction_distance as direction_distance
from ._dynamics import effective_rank_sweep as effective_rank_sweep
from ._dynamics import hadamard_linearized_field as hadamard_linearized_field
from ._dynamics import kl_rate as kl_rate
from ._dynamics import log_ratio_rate as log_ratio_rate
from ._dynamics import minimal_supports as minimal_supports
from ._dynamics import perturb_structure as perturb_structure
from ._dynamics import rich_get_richer as rich_get_richer
from ._dynamics import solve_hadamard_batch as solve_hadamard_batch
from ._stability import cross_polytope_critical_scale as cross_polytope_critical_scale
from ._stability import cross_polytope_stability as cross_polytope_stability
from ._stability import cross_polytope_support as cross_polytope_support
from ._stability import dnc_critical_scale as dnc_critical_scale
from ._stability import dnc_stability as dnc_stability
from ._stability import dnc_support as dnc_support
from ._stability import log_rate_jacobian as log_rate_jacobian
from ._stability import structure_critical_scale as structure_critical_scale
from ._stability import structure_point as structure_point
from ._stability import structure_stability as structure_stability
from ._stability import tangent_eigenvalues as tangent_eigenvalues
from ._width import converged_rank_vs_width as converged_rank_vs_width
from ._width import flow_until as flow_until
from ._width import grown_alignment as grown_alignment
from ._width import grown_alignment_sweep as grown_alignment_sweep
from ._width import initial_velocity_etf_distance as initial_velocity_etf_distance
from ._width import random_vs_hadamard as random_vs_hadamard
from ._width import width_alignment as width_alignment
from ._candidates import CANDIDATE_NAMES as CANDIDATE_NAMES
from ._candidates import candidate_objective as candidate_objective
from ._candidates import candidate_singular_values as candidate_singular_values
from ._candidates import candidate_structure as candidate_structure
from ._candidates import candidates_for as candidates_for
from ._candidates import class_margin as class_margin
from ._candidates import max_margin_objective as max_margin_objective
from ._landscape import best_candidate as best_candidate
from ._landscape import dnc_transition_depth as dnc_transition_depth
from ._landscape import landscape_map as landscape_map
from ._landscape import landscape_table as landscape_table
from ._landscape import plot_landscape_map as plot_landscape_map
