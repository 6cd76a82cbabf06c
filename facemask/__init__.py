"""facemask: train and evaluate face-mask classifiers, one DVC stage at a time."""

__version__ = "0.1.0"
