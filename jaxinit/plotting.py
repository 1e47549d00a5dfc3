"""moved to jaxinit.app.plotting; this path is kept.

The names here are the objects of :mod:`jaxinit.app.plotting`; patch that module, not this one.
"""

from .app.plotting import OFF_SCALE as OFF_SCALE
from .app.plotting import histograms_figure as histograms_figure
from .app.plotting import layer_stats_figure as layer_stats_figure
from .app.plotting import plot_coord_check as plot_coord_check
from .app.plotting import plot_histograms as plot_histograms
from .app.plotting import plot_layer_stats as plot_layer_stats
from .app.plotting import plot_rank_collapse as plot_rank_collapse
from .app.plotting import plot_spp as plot_spp
from .app.plotting import rank_collapse_figure as rank_collapse_figure
from .app.plotting import spp_figure as spp_figure

__all__ = [
    "OFF_SCALE",
    "histograms_figure",
    "layer_stats_figure",
    "plot_coord_check",
    "plot_histograms",
    "plot_layer_stats",
    "plot_rank_collapse",
    "plot_spp",
    "rank_collapse_figure",
    "spp_figure",
]
