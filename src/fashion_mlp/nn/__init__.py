"""The from-scratch network: pure NumPy, no files, no printing."""

from .layers import Dropout, Layer, Linear, Parameter, ReLU
from .losses import log_softmax, softmax, softmax_cross_entropy
from .model import INITS, MLP, parameter_shapes
from .optim import SGD, Adam, Optimizer
from .schedules import SCHEDULES, Schedule

__all__ = [
    "INITS",
    "MLP",
    "SCHEDULES",
    "SGD",
    "Adam",
    "Dropout",
    "Layer",
    "Linear",
    "Optimizer",
    "Parameter",
    "ReLU",
    "Schedule",
    "log_softmax",
    "parameter_shapes",
    "softmax",
    "softmax_cross_entropy",
]
