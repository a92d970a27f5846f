"""gpucnn: a CNN engine with hand-written gradients, our own CUDA kernels and Numba CPU kernels.

    import gpucnn as gc
    model = gc.Sequential([gc.Conv2D(1, 32, 3, padding=1), gc.ReLU(), gc.MaxPool2D(2), ...])
"""

from .backend import Backend, ConvGeometry, PoolGeometry, get_backend
from .backend.precision import get_conv_precision, set_conv_precision
from .layers import (AvgPool2D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten, GlobalAvgPool2D,
                     Layer, LeakyReLU, MaxPool2D, ReLU, Sigmoid, Tanh)
from .losses import BinaryCrossEntropyWithLogits, Loss, MSELoss, SoftmaxCrossEntropy
from .model import Sequential, load_model
from .optim import SGD, Adam, AdamW, CosineLR, Optimizer, Parameter, StepLR
from .random import seed
from . import datasets, metrics, models
from .callbacks import Callback, EarlyStopping, LearningRateScheduler, ModelCheckpoint
from .trainer import History, NonFiniteLossError, Trainer
from .cam import GradCAM, GradCAMPlusPlus, GuidedBackprop, GuidedGradCAM, ScoreCAM
from . import cpu_threads as _cpu_threads
from .cpu_threads import get_threads, set_threads, threads

__version__ = "0.1.0"

__all__ = [
    "Backend", "ConvGeometry", "PoolGeometry", "get_backend", "get_conv_precision", "set_conv_precision",
    "AvgPool2D", "BatchNorm2D", "Conv2D", "Dense", "Dropout", "Flatten", "GlobalAvgPool2D",
    "Layer", "LeakyReLU", "MaxPool2D", "ReLU", "Sigmoid", "Tanh",
    "BinaryCrossEntropyWithLogits", "Loss", "MSELoss", "SoftmaxCrossEntropy",
    "Sequential", "load_model",
    "SGD", "Adam", "AdamW", "CosineLR", "Optimizer", "Parameter", "StepLR",
    "seed",
    "Trainer", "History", "NonFiniteLossError", "Callback", "EarlyStopping", "ModelCheckpoint",
    "LearningRateScheduler",
    "GradCAM", "GradCAMPlusPlus", "GuidedBackprop", "GuidedGradCAM", "ScoreCAM",
    "set_threads", "get_threads", "threads",
]

# One thread unless GPUCNN_THREADS says otherwise: more threads than free cores make
# the small GEMMs of small images many times slower (cpu_threads says why, with numbers).
_cpu_threads.apply_default()
