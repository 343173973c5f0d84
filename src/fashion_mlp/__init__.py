"""fashion-mlp: a from-scratch NumPy multilayer perceptron for Fashion-MNIST."""

import os as _os
import sys as _sys

__version__ = "0.1.0"

# OpenBLAS's idle threads spin for 2^28 cycles after each product, holding the core that our
# second half of each copy and elementwise pass wants; 2^16 (about 25 us) is enough between one
# answer's products. OpenBLAS reads this once, as NumPy is first imported (nn/halves.py).
if "numpy" not in _sys.modules:
    _os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "16")
