"""Training: frozen features, the linear head, fine-tuning, the label audit, k-fold comparison."""
