"""``python -m jaxse.compare``: the command of :mod:`jaxse.evaluation.compare` under the name users type."""

import sys

from jaxse.evaluation.compare import main

if __name__ == "__main__":
    sys.exit(main())
