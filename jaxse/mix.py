"""``python -m jaxse.mix``: the command of :mod:`jaxse.evaluation.mix` under the name users type."""

import sys

from jaxse.evaluation.mix import main

if __name__ == "__main__":
    sys.exit(main())
