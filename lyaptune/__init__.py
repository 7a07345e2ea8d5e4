"""lyaptune: hyperparameter studies of Lyapunov-style optimizer step sizes, on Ray Tune + Optuna."""

__version__ = "0.1.0"
