"""ssvae_fast: fast, verified training of Kingma et al.'s M2 semi-supervised VAE.

    >>> import ssvae_fast
    >>> model = ssvae_fast.M2(x_dim=784, n_classes=10, z_dim=50)
    >>> ssvae_fast.available_backends()
    ['reference', 'torch', ...]
"""

from . import reference
from .backends import BACKENDS, BackendUnavailableError, available_backends
from .model import M2
from .validation import set_validation, validation_enabled

__version__ = "0.1.0"

__all__ = [
    "M2", "reference", "available_backends", "BACKENDS", "BackendUnavailableError", "set_validation",
    "validation_enabled", "__version__",
]
