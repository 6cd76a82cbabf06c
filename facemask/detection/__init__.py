"""Detection the pipeline learns: the no-face re-scorer of detector boxes (detect/dvc.yaml)."""
