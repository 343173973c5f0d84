"""The from-scratch network: pure NumPy, no files, no printing."""

from .conv import BatchNorm, Conv2d, Flatten, Image, MaxPool2d
from .gradcheck import TOLERANCE, GradientCheck, check_gradients
from .inference import Affine, Inference, fold_batch_norms, folded_layers
from .layers import Centre, Dropout, Layer, Linear, Parameter, ReLU
from .losses import cross_entropy, example_losses, log_softmax, softmax, softmax_cross_entropy
from .model import CENTRE_MEAN, INITS, MLP, mlp_records, state_shapes
from .network import BUILDERS, Network, NetworkInference, cnn_records
from .optim import SGD, Adam, Optimizer
from .schedules import SCHEDULES, Schedule

__all__ = [
    "BUILDERS",
    "CENTRE_MEAN",
    "INITS",
    "MLP",
    "SCHEDULES",
    "SGD",
    "TOLERANCE",
    "Adam",
    "Affine",
    "BatchNorm",
    "Centre",
    "Conv2d",
    "Dropout",
    "Flatten",
    "GradientCheck",
    "Image",
    "Inference",
    "Layer",
    "Linear",
    "MaxPool2d",
    "Network",
    "NetworkInference",
    "Optimizer",
    "Parameter",
    "ReLU",
    "Schedule",
    "check_gradients",
    "cnn_records",
    "cross_entropy",
    "example_losses",
    "fold_batch_norms",
    "folded_layers",
    "log_softmax",
    "mlp_records",
    "softmax",
    "softmax_cross_entropy",
    "state_shapes",
]
