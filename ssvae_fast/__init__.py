"""ssvae_fast: fast, verified training of Kingma et al.'s semi-supervised VAEs (M2, M1, M1+M2).

    >>> import ssvae_fast
    >>> model = ssvae_fast.M2(x_dim=784, n_classes=10, z_dim=50)
    >>> ssvae_fast.available_backends()
    ['reference', 'torch', ...]
"""

from . import reference
from .backends import BACKENDS, BackendUnavailableError, available_backends
from .m1 import M1
from .model import M2
from .stacked import M1M2
from .validation import set_validation, validation_enabled

__version__ = "0.1.0"

__all__ = [
    "M1", "M2", "M1M2", "reference", "available_backends", "BACKENDS", "BackendUnavailableError", "set_validation",
    "validation_enabled", "__version__",
]
