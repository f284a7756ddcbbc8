"""gdexp: see how gradient descent trains a neural network (NumPy MLP, Hydra, Optuna, MLflow)."""

__version__ = "0.1.0"
