"""The from-scratch network: pure NumPy, no files, no printing."""

from .activations import Dropout, ReLU, relu_
from .answering import Inference, fold
from .conv import Conv2d, col2im, im2col
from .dense import Linear
from .gradcheck import TOLERANCE, GradientCheck, check_gradients
from .layer import INITS, MAX_WIDTH, Builder, Layer, Parameter, Record, initial_weight
from .losses import cross_entropy, example_losses, log_softmax, softmax, softmax_cross_entropy
from .network import KINDS, MAX_RECORDS, MLP, VIEWS, Network, cnn_records, mlp_records
from .norm import CENTRE_MEAN, BatchNorm, Centre
from .optim import SGD, Adam, Optimizer
from .plan import Affine, Folding, Plan
from .pooling import GlobalAvgPool, MaxPool2d
from .reshape import Flatten, Image
from .residual import Residual
from .schedules import SCHEDULES, Schedule
from .views import MeanOfViews, Views

__all__ = [
    "CENTRE_MEAN",
    "INITS",
    "KINDS",
    "MAX_RECORDS",
    "MAX_WIDTH",
    "MLP",
    "SCHEDULES",
    "SGD",
    "TOLERANCE",
    "VIEWS",
    "Adam",
    "Affine",
    "BatchNorm",
    "Builder",
    "Centre",
    "Conv2d",
    "Dropout",
    "Flatten",
    "Folding",
    "GlobalAvgPool",
    "GradientCheck",
    "Image",
    "Inference",
    "Layer",
    "Linear",
    "MaxPool2d",
    "MeanOfViews",
    "Network",
    "Optimizer",
    "Parameter",
    "Plan",
    "ReLU",
    "Record",
    "Residual",
    "Schedule",
    "Views",
    "check_gradients",
    "cnn_records",
    "col2im",
    "cross_entropy",
    "example_losses",
    "fold",
    "im2col",
    "initial_weight",
    "log_softmax",
    "mlp_records",
    "relu_",
    "softmax",
    "softmax_cross_entropy",
]
