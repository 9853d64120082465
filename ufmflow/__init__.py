"""ufmflow: gradient flow of the deep unconstrained features model, in JAX.

float64 is switched on at import (solves need it on CPU); set the environment variable
`UFMFLOW_X64=0` before importing to keep JAX's float32 default (e.g. for GPU throughput).
"""

import os as _os

import jax as _jax

from ._version import __version__ as __version__

if _os.environ.get("UFMFLOW_X64", "1") != "0":
    _jax.config.update("jax_enable_x64", True)

from .solvers import default_save_epochs as default_save_epochs
from .solvers import descend as descend
from .solvers import FlowSolution as FlowSolution
from .solvers import HadamardSolution as HadamardSolution
from .solvers import default_save_times as default_save_times
from .solvers import solve_flow as solve_flow
from .solvers import solve_hadamard as solve_hadamard
from .solvers import solve_hadamard_many as solve_hadamard_many
from .core import depth_exponent as depth_exponent
from .core import fwht as fwht
from .core import hadamard_direction_field as hadamard_direction_field
from .core import hadamard_field as hadamard_field
from .core import hadamard_log_loss as hadamard_log_loss
from .core import hadamard_log_rates as hadamard_log_rates
from .core import hadamard_logits as hadamard_logits
from .core import hadamard_loss as hadamard_loss
from .core import hadamard_margin as hadamard_margin
from .core import hadamard_time_scale as hadamard_time_scale
from .core import log_one_minus_lambda as log_one_minus_lambda
from .core import sylvester_hadamard as sylvester_hadamard
from .core import gaussian_init as gaussian_init
from .core import hadamard_init as hadamard_init
from .core import hadamard_initial_direction as hadamard_initial_direction
from .core import random_directions as random_directions
from .core import DIRECTION_DISTRIBUTIONS as DIRECTION_DISTRIBUTIONS
from .solvers import STATUS_NAMES as STATUS_NAMES
from .solvers import Status as Status
from .solvers import status_message as status_message
from .solvers import TIME_CHANGES as TIME_CHANGES
from .solvers import status_name as status_name
from .core import balancedness as balancedness
from .core import balancedness_residual as balancedness_residual
from .core import effective_rank as effective_rank
from .core import effective_rank_from_singular_values as effective_rank_from_singular_values
from .core import etf_distance as etf_distance
from .core import geometric_margin as geometric_margin
from .core import hadamard_departure as hadamard_departure
from .core import kl_to_nc as kl_to_nc
from .core import logit_velocity as logit_velocity
from .core import min_margin as min_margin
from .core import nc1 as nc1
from .core import nc2 as nc2
from .core import nc3 as nc3
from .core import nc_metrics as nc_metrics
from .core import normalized_margin as normalized_margin
from .core import singular_values as singular_values
from .core import DeepUFM as DeepUFM
from .solvers import fast_cpu_loops as fast_cpu_loops
from .solvers import single_threaded_lapack as single_threaded_lapack
from .solvers import use_cpu_cores as use_cpu_cores

from .theory import STRUCTURE_NAMES as STRUCTURE_NAMES
from .theory import basins_of_attraction as basins_of_attraction
from .theory import classify_structure as classify_structure
from .theory import cross_polytope_mixture as cross_polytope_mixture
from .theory import cross_polytope_ratio_threshold as cross_polytope_ratio_threshold
from .theory import direction_distance as direction_distance
from .theory import effective_rank_sweep as effective_rank_sweep
from .theory import hadamard_linearized_field as hadamard_linearized_field
from .theory import kl_rate as kl_rate
from .theory import log_ratio_rate as log_ratio_rate
from .theory import minimal_supports as minimal_supports
from .theory import perturb_structure as perturb_structure
from .theory import rich_get_richer as rich_get_richer
from .theory import solve_hadamard_batch as solve_hadamard_batch
from .theory import cross_polytope_critical_scale as cross_polytope_critical_scale
from .theory import cross_polytope_stability as cross_polytope_stability
from .theory import cross_polytope_support as cross_polytope_support
from .theory import dnc_critical_scale as dnc_critical_scale
from .theory import dnc_stability as dnc_stability
from .theory import dnc_support as dnc_support
from .theory import log_rate_jacobian as log_rate_jacobian
from .theory import structure_critical_scale as structure_critical_scale
from .theory import structure_point as structure_point
from .theory import structure_stability as structure_stability
from .theory import tangent_eigenvalues as tangent_eigenvalues
from .theory import converged_rank_vs_width as converged_rank_vs_width
from .theory import flow_until as flow_until
from .theory import grown_alignment as grown_alignment
from .theory import grown_alignment_sweep as grown_alignment_sweep
from .theory import initial_velocity_etf_distance as initial_velocity_etf_distance
from .theory import random_vs_hadamard as random_vs_hadamard
from .theory import width_alignment as width_alignment
from .sweep import plot_sweep as plot_sweep
from .sweep import SweepConfig as SweepConfig
from .sweep import SweepInputError as SweepInputError
from .sweep import initialize_distributed as initialize_distributed
from .sweep import load_sweep as load_sweep
from .sweep import run_sweep as run_sweep
from .sweep import sweep_summary as sweep_summary
from .sweep import sweep_summary_text as sweep_summary_text
from .sweep import ok_runs as ok_runs
from .theory import CANDIDATE_NAMES as CANDIDATE_NAMES
from .theory import candidate_objective as candidate_objective
from .theory import candidate_singular_values as candidate_singular_values
from .theory import candidate_structure as candidate_structure
from .theory import candidates_for as candidates_for
from .theory import class_margin as class_margin
from .theory import max_margin_objective as max_margin_objective
from .theory import best_candidate as best_candidate
from .theory import dnc_transition_depth as dnc_transition_depth
from .theory import landscape_map as landscape_map
from .theory import landscape_table as landscape_table
from .theory import plot_landscape_map as plot_landscape_map
from .theory import classify_optimum as classify_optimum
from .theory import distinct_optima as distinct_optima
from .theory import softmax_code as softmax_code
from .theory import solve_max_margin as solve_max_margin
from .theory import KGON_METHODS as KGON_METHODS
from .theory import RANK_RTOL_KGON as RANK_RTOL_KGON
from .theory import adjacent_angles as adjacent_angles
from .theory import circle_angles as circle_angles
from .theory import circle_order as circle_order
from .theory import circulant_defect as circulant_defect
from .theory import gram_factor as gram_factor
from .theory import kgon_measure as kgon_measure
from .theory import kgon_runs as kgon_runs
from .theory import numerical_rank as numerical_rank
from .theory import permute_classes as permute_classes
from .realnet import Classifier as Classifier
from .realnet import MLPExtractor as MLPExtractor
from .realnet import RealNetConfig as RealNetConfig
from .realnet import ReLUHead as ReLUHead
from .realnet import ResNetExtractor as ResNetExtractor
from .realnet import load_digits as load_digits
from .realnet import load_mnist as load_mnist
from .realnet import load_npz as load_npz
from .realnet import plot_real_networks as plot_real_networks
from .realnet import real_network_experiment as real_network_experiment
from .realnet import realnet_summary as realnet_summary
from .realnet import train_full_batch as train_full_batch
