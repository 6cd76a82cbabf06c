"""facemask: train and evaluate face-mask classifiers, one DVC stage at a time.

`facemask.load(model)` gives an object whose `predict(pictures)` answers pictures or camera
frames (facemask.api); the rest of the package is the pipeline's library.
"""

__version__ = "0.1.0"


def load(model, **kwargs):
    """facemask.api.load, imported on first use (torch and the detector load with it)."""
    from facemask.api import load as _load

    return _load(model, **kwargs)
