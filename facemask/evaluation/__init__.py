"""Evaluation: metrics, prediction tables, and how a model does on data unlike its training."""
