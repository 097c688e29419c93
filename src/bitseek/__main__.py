"""``python -m bitseek`` runs the CLI."""

import sys

from bitseek.cli.main import main

sys.exit(main())
