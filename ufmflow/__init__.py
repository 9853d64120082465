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

__version__ = "0.1.0"
from ._plots import plot_sweep as plot_sweep
from ._sweep_engine import SweepConfig as SweepConfig
from ._sweep_engine import SweepInputError as SweepInputError
from ._sweep_engine import hadamard_initial_direction as hadamard_initial_direction
from ._sweep_engine import load_sweep as load_sweep
from ._sweep_engine import run_sweep as run_sweep
from ._sweep_engine import sweep_summary as sweep_summary
from ._sweep_engine import sweep_summary_text as sweep_summary_text
