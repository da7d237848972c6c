"""Old import path of :mod:`robustmm.text.substitutes` (text tooling is not an attack; it moved
to the ``robustmm.text`` package). Import from ``robustmm.text`` in new code."""
from ..text.substitutes import *  # noqa: F403
from ..text.substitutes import __all__  # noqa: F401
