"""The model's mathematics: the deep UFM (theory §1), its initializations and the one random
Hadamard direction sampler (§3), Hadamard algebra and the reduced field (§4), measurements (§6).
Imports nothing from the rest of ufmflow.
"""

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
from ._init import DIRECTION_DISTRIBUTIONS as DIRECTION_DISTRIBUTIONS
from ._init import hadamard_init as hadamard_init
from ._init import hadamard_initial_direction as hadamard_initial_direction
from ._init import random_directions as random_directions
from ._metrics import balancedness as balancedness
from ._metrics import balancedness_residual as balancedness_residual
from ._metrics import effective_rank as effective_rank
from ._metrics import effective_rank_from_singular_values as effective_rank_from_singular_values
from ._metrics import etf_distance as etf_distance
from ._metrics import geometric_margin as geometric_margin
from ._metrics import hadamard_departure as hadamard_departure
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
