"""``python -m plfw`` (used by torchrun: ``torchrun ... -m plfw train CONFIG``)."""

import sys

from plfw.cli import main

sys.exit(main())
