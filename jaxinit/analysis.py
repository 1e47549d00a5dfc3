"""Variance propagation: per-layer statistics over many seeds, and mean-field predictions."""

from __future__ import annotations

from ._meanfield import Prediction as Prediction
from ._meanfield import critical_sigma_w as critical_sigma_w
from ._meanfield import predict as predict
