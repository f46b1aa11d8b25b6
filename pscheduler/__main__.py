"""``python -m pscheduler``: the same as the ``pscheduler`` script."""
import sys

from .cli import main

sys.exit(main())
