"""ufmflow: gradient flow of the deep unconstrained features model, in JAX.

float64 is switched on at import (SPEC solves need it on CPU); set the environment variable
`UFMFLOW_X64=0` before importing to keep JAX's float32 default (e.g. for GPU throughput).
"""

import os as _os

import jax as _jax

if _os.environ.get("UFMFLOW_X64", "1") != "0":
    _jax.config.update("jax_enable_x64", True)

from ._descent import default_save_epochs as default_save_epochs
from ._descent import descend as descend
from ._flow import FlowSolution as FlowSolution
from ._flow import HadamardSolution as HadamardSolution
from ._flow import default_save_times as default_save_times
from ._flow import solve_flow as solve_flow
from ._flow import solve_hadamard as solve_hadamard
from ._hadamard_many import solve_hadamard_many as solve_hadamard_many
from ._hadamard import depth_exponent as depth_exponent
from ._hadamard import fwht as fwht
from ._hadamard import hadamard_direction_field as hadamard_direction_field
from ._hadamard import hadamard_field as hadamard_field
from ._hadamard import hadamard_log_loss as hadamard_log_loss
from ._hadamard import hadamard_log_rates as hadamard_log_rates
from ._hadamard import hadamard_logits as hadamard_logits
from ._hadamard import hadamard_loss as hadamard_loss
from ._hadamard import hadamard_margin as hadamard_margin
from ._hadamard import hadamard_time_scale as hadamard_time_scale
from ._hadamard import log_one_minus_lambda as log_one_minus_lambda
from ._hadamard import sylvester_hadamard as sylvester_hadamard
from ._init import gaussian_init as gaussian_init
from ._init import hadamard_init as hadamard_init
from ._integrate import STATUS_NAMES as STATUS_NAMES
from ._integrate import status_name as status_name
from ._metrics import balancedness as balancedness
from ._metrics import balancedness_residual as balancedness_residual
from ._metrics import effective_rank as effective_rank
from ._metrics import effective_rank_from_singular_values as effective_rank_from_singular_values
from ._metrics import etf_distance as etf_distance
from ._metrics import geometric_margin as geometric_margin
from ._metrics import kl_to_nc as kl_to_nc
from ._metrics import logit_velocity as logit_velocity
from ._metrics import min_margin as min_margin
from ._metrics import nc1 as nc1
from ._metrics import nc2 as nc2
from ._metrics import nc3 as nc3
from ._metrics import nc_metrics as nc_metrics
from ._metrics import normalized_margin as normalized_margin
from ._metrics import singular_values as singular_values
from ._model import DeepUFM as DeepUFM
from ._xla import fast_cpu_loops as fast_cpu_loops

__version__ = "0.1.0"
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
from ._dynamics import random_directions as random_directions
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
from ._plots import plot_sweep as plot_sweep
from ._sweep_engine import SweepConfig as SweepConfig
from ._sweep_engine import SweepInputError as SweepInputError
from ._sweep_engine import hadamard_initial_direction as hadamard_initial_direction
from ._sweep_engine import load_sweep as load_sweep
from ._sweep_engine import run_sweep as run_sweep
from ._sweep_engine import sweep_summary as sweep_summary
from ._sweep_engine import sweep_summary_text as sweep_summary_text
