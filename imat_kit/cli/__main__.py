"""``python -m imat_kit.cli``: the same as the ``imat-kit`` command."""

import sys

from imat_kit.cli.commands import main

sys.exit(main())
