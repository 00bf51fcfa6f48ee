"""``python -m jaxse.evaluate``: the command of :mod:`jaxse.evaluation.evaluate` under the name users type."""

import sys

from jaxse.evaluation.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
