"""jaxinit: the initialization toolkit for JAX and Flax."""

from ._fans import compute_fans as compute_fans
from ._types import Initializer as Initializer
from .basic import constant as constant
from .basic import normal as normal
from .basic import ones as ones
from .basic import truncated_normal as truncated_normal
from .basic import uniform as uniform
from .basic import zeros as zeros
from .bias import prior_bias as prior_bias
from .bias import torch_bias_default as torch_bias_default
from .gains import gain as gain
from .orthogonal import delta_orthogonal as delta_orthogonal
from .orthogonal import orthogonal as orthogonal
from .structured import identity as identity
from .structured import sparse as sparse
from .variance_scaling import glorot_normal as glorot_normal
from .variance_scaling import glorot_uniform as glorot_uniform
from .variance_scaling import he_normal as he_normal
from .variance_scaling import he_uniform as he_uniform
from .variance_scaling import kaiming_normal as kaiming_normal
from .variance_scaling import kaiming_uniform as kaiming_uniform
from .variance_scaling import lecun_normal as lecun_normal
from .variance_scaling import lecun_uniform as lecun_uniform
from .variance_scaling import torch_default as torch_default
from .variance_scaling import variance_scaling as variance_scaling
from .variance_scaling import xavier_normal as xavier_normal
from .variance_scaling import xavier_uniform as xavier_uniform

__version__ = "0.1.0"

# LSUV and the probe it is built on (issue 3)
from . import models as models
from . import probe as probe

# Analysis: variance propagation over seeds, mean-field predictions.
from .analysis import Band as Band
from .analysis import LayerStats as LayerStats
from .analysis import Prediction as Prediction
from .analysis import critical_sigma_w as critical_sigma_w
from .analysis import layer_stats as layer_stats
from .analysis import predict as predict
from .lsuv import LSUVReport as LSUVReport
from .lsuv import lsuv as lsuv
