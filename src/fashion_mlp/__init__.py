"""fashion-mlp: a from-scratch NumPy multilayer perceptron for Fashion-MNIST."""

__version__ = "0.1.0"
