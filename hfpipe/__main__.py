"""``python -m hfpipe`` and ``accelerate launch -m hfpipe``: the same verbs as the ``hfpipe`` command."""

import sys

from .cli import main

sys.exit(main())
