"""``python -m ldcodec`` (and ``torchrun ... -m ldcodec train``) runs the command line."""

import sys

from .cli import main

sys.exit(main())
