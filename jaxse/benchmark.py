"""``python -m jaxse.benchmark``: the command of :mod:`jaxse.evaluation.benchmark` under the name users type."""

import sys

from jaxse.evaluation.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
