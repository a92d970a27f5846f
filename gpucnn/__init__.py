"""gpucnn: a CNN engine with hand-written gradients, our own CUDA kernels and Numba CPU kernels."""

from .backend import get_backend, Backend, ConvGeometry, PoolGeometry

__version__ = "0.1.0"
