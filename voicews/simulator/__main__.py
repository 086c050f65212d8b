"""``python -m voicews.simulator``: the same as ``voicews-call``."""

import sys

from voicews.simulator.cli import main

sys.exit(main())
