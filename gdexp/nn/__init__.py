"""The NumPy neural-network engine: activations, losses, initialisers, layers and the MLP."""

from gdexp.nn.mlp import MLP, save_npz

__all__ = ["MLP", "save_npz"]
