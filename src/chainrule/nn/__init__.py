"""Neural-network building blocks with PyTorch's names: Module, layers, losses, initializers."""

from .activation import ReLU, Sigmoid, Tanh
from .containers import Flatten, Identity, ModuleDict, ModuleList, Sequential, Unflatten
from .linear import Linear
from .loss import CrossEntropyLoss, MSELoss
from .module import Module, Parameter

__all__ = [
    "CrossEntropyLoss",
    "Flatten",
    "Identity",
    "Linear",
    "MSELoss",
    "Module",
    "ModuleDict",
    "ModuleList",
    "Parameter",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Tanh",
    "Unflatten",
]
