"""Initialization recipes, parametrizations and audits, built on :mod:`jaxinit.tree` and
:func:`jaxinit.measure`.

``jaxinit.recipes`` holds the recipes themselves: :class:`Recipe` and :class:`Rule`, the
residual and transformer recipes of the literature (:mod:`jaxinit.recipes.residual`) and the
defaults of real training codebases (:mod:`jaxinit.recipes.presets`). The width and depth
parametrizations are :mod:`jaxinit.mup` and :mod:`jaxinit.umup`; the audit is
:func:`jaxinit.audit`.
"""

from .presets import big_vision_vit as big_vision_vit
from .presets import maxtext as maxtext
from .presets import nanodo as nanodo
from .presets import olmo_core as olmo_core
from .presets import t5x as t5x
from .recipe import Recipe as Recipe
from .recipe import Rule as Rule
from .residual import DeepNormConstants as DeepNormConstants
from .residual import deepnorm as deepnorm
from .residual import deepnorm_constants as deepnorm_constants
from .residual import fixup as fixup
from .residual import gpt2 as gpt2
from .residual import layerscale as layerscale
from .residual import query_folding as query_folding
from .residual import rezero as rezero
from .residual import skipinit as skipinit
from .residual import spectral as spectral
from .residual import spectral_normal as spectral_normal
from .residual import t_fixup as t_fixup
from .residual import zero_init_residual as zero_init_residual

__all__ = [
    "DeepNormConstants",
    "Recipe",
    "Rule",
    "big_vision_vit",
    "deepnorm",
    "deepnorm_constants",
    "fixup",
    "gpt2",
    "layerscale",
    "maxtext",
    "nanodo",
    "olmo_core",
    "query_folding",
    "rezero",
    "skipinit",
    "spectral",
    "spectral_normal",
    "t5x",
    "t_fixup",
    "zero_init_residual",
]
