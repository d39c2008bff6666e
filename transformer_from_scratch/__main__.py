"""``python -m transformer_from_scratch`` is ``tfs``."""

import sys

from transformer_from_scratch.cli import main

sys.exit(main())
