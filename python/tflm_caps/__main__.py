"""``python -m tflm_caps`` runs the CLI."""
import sys

from tflm_caps.cli import main

sys.exit(main())
