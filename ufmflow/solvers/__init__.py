"""Integration: the adaptive driver over time-changed flows (theory §2), the Rosenbrock-W method,
the full gradient flow and the reduced ODE, the batched reduced-ODE loop, gradient descent.
Imports `ufmflow.core` only.
"""

from ._descent import default_save_epochs as default_save_epochs
from ._descent import descend as descend
from ._flow import FlowSolution as FlowSolution
from ._reduced import HadamardSolution as HadamardSolution
from ._flow import default_save_times as default_save_times
from ._flow import solve_flow as solve_flow
from ._rosenbrock import RosenbrockW as RosenbrockW
from ._reduced import solve_hadamard as solve_hadamard
from ._hadamard_many import solve_hadamard_many as solve_hadamard_many
from ._status import STATUS_NAMES as STATUS_NAMES
from ._status import Status as Status
from ._status import status_message as status_message
from ._status import status_name as status_name
from ._time_change import TIME_CHANGES as TIME_CHANGES
from ._xla import fast_cpu_loops as fast_cpu_loops
from ._blas import single_threaded_lapack as single_threaded_lapack
from ._devices import use_cpu_cores as use_cpu_cores
