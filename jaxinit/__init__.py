"""jaxinit: the initialization toolkit for JAX and Flax.

``import jaxinit`` loads jax and numpy only. The initializers, fans, gains and mean-field
predictions are defined at import; the names that need Flax or optax (``lsuv``,
``layer_stats``, ``models``, ...) load on first use, so an initializer-only user never pays for
them.
"""

from __future__ import annotations

import importlib
import types
from typing import TYPE_CHECKING, Any

from . import meanfield as meanfield
from ._fans import compute_fans as compute_fans
from ._types import Initializer as Initializer
from ._version import __version__ as __version__
from .basic import constant as constant
from .basic import normal as normal
from .basic import ones as ones
from .basic import truncated_normal as truncated_normal
from .basic import uniform as uniform
from .basic import zeros as zeros
from .bias import prior_bias as prior_bias
from .bias import torch_bias_default as torch_bias_default
from .gains import gain as gain
from .identity_like import id_init as id_init
from .identity_like import zero_hadamard as zero_hadamard
from .meanfield import Prediction as Prediction
from .meanfield import critical_sigma_w as critical_sigma_w
from .meanfield import predict as predict
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

if TYPE_CHECKING:  # what static tools see; at run time these load lazily (``__getattr__``)
    from . import activation_transform as activation_transform
    from . import data as data
    from . import diagnostics as diagnostics
    from . import models as models
    from . import probe as probe
    from . import recipes as recipes
    from . import tree as tree
    from ._flax.layers import for_layer as for_layer
    from ._measure import Measurement as Measurement
    from ._measure import measure as measure
    from .analysis import Band as Band
    from .analysis import LayerStats as LayerStats
    from .analysis import layer_outputs as layer_outputs
    from .analysis import layer_stats as layer_stats
    from .lsuv import LSUVReport as LSUVReport
    from .lsuv import lsuv as lsuv
    from .recipes import mup as mup
    from .recipes import umup as umup
    from .recipes.audit import Audit as Audit
    from .recipes.audit import audit as audit
    from .recipes.coord_check import CoordCheck as CoordCheck
    from .recipes.coord_check import coord_check as coord_check
    from .recipes.recipe import Recipe as Recipe
    from .recipes.recipe import Rule as Rule

# Public name -> (module, attribute); attribute None means the module itself.
_LAZY: dict[str, tuple[str, str | None]] = {
    "activation_transform": (".activation_transform", None),
    "data": (".data", None),
    "diagnostics": (".diagnostics", None),
    "models": (".models", None),
    "probe": (".probe", None),
    "tree": (".tree", None),
    "Band": (".analysis", "Band"),
    "LayerStats": (".analysis", "LayerStats"),
    "layer_outputs": (".analysis", "layer_outputs"),
    "layer_stats": (".analysis", "layer_stats"),
    "LSUVReport": (".lsuv", "LSUVReport"),
    "lsuv": (".lsuv", "lsuv"),
    "CoordCheck": (".recipes.coord_check", "CoordCheck"),
    "coord_check": (".recipes.coord_check", "coord_check"),
    "mup": (".recipes.mup", None),
    "recipes": (".recipes", None),
    "Recipe": (".recipes.recipe", "Recipe"),
    "Rule": (".recipes.recipe", "Rule"),
    "Audit": (".recipes.audit", "Audit"),
    "audit": (".recipes.audit", "audit"),
    "umup": (".recipes.umup", None),
    "for_layer": ("._flax.layers", "for_layer"),
    "Measurement": ("._measure", "Measurement"),
    "measure": ("._measure", "measure"),
}

__all__ = [
    "Audit",
    "Band",
    "CoordCheck",
    "Initializer",
    "LSUVReport",
    "LayerStats",
    "Measurement",
    "Prediction",
    "Recipe",
    "Rule",
    "__version__",
    "activation_transform",
    "audit",
    "compute_fans",
    "constant",
    "coord_check",
    "critical_sigma_w",
    "data",
    "delta_orthogonal",
    "diagnostics",
    "for_layer",
    "gain",
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "id_init",
    "identity",
    "kaiming_normal",
    "kaiming_uniform",
    "layer_outputs",
    "layer_stats",
    "lecun_normal",
    "lecun_uniform",
    "lsuv",
    "meanfield",
    "measure",
    "models",
    "mup",
    "normal",
    "ones",
    "orthogonal",
    "predict",
    "prior_bias",
    "probe",
    "recipes",
    "sparse",
    "torch_bias_default",
    "torch_default",
    "tree",
    "truncated_normal",
    "umup",
    "uniform",
    "variance_scaling",
    "xavier_normal",
    "xavier_uniform",
    "zero_hadamard",
    "zeros",
]


def __getattr__(name: str) -> Any:
    try:
        module_name, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'jaxinit' has no attribute {name!r}") from None
    module = importlib.import_module(module_name, __name__)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    # Importing a submodule binds its name here: ``jaxinit.lsuv`` would be the module once
    # ``LSUVReport`` loaded it. The public name (the function) wins.
    for public, (source, attr) in _LAZY.items():
        if attr is not None and isinstance(globals().get(public), types.ModuleType):
            globals()[public] = getattr(importlib.import_module(source, __name__), attr)
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
