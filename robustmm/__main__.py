"""``python -m robustmm`` is the ``robustmm`` command (also under ``torchrun``)."""
import sys

from .cli import main

sys.exit(main())
