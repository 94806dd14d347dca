"""digitnet: create, train, evaluate and deploy convolutional networks that read handwritten
digits."""

from digitnet.errors import DigitnetError
from digitnet.version import __version__

__all__ = ["DigitnetError", "__version__", "load"]


def load(ref: str, **kwargs):
    """Load a trained model by reference; see `digitnet.store.load_model`."""
    from digitnet.store import load_model

    return load_model(ref, **kwargs)
