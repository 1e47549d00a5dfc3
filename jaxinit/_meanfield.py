"""The mean-field prediction under its internal path; the code lives in
:mod:`jaxinit.meanfield`."""

from __future__ import annotations

from .meanfield import Prediction as Prediction
from .meanfield import critical_sigma_w as critical_sigma_w
from .meanfield import predict as predict

__all__ = ["Prediction", "critical_sigma_w", "predict"]
