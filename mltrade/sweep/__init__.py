"""Optimisation sweeps: the vectorised knock-out evaluator, broker confirmation runs and Optuna studies."""
