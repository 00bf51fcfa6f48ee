"""``python -m jaxse.convert``: the command of :mod:`jaxse.diffusion.convert` under the name users type."""

import sys

from jaxse.diffusion.convert import main

if __name__ == "__main__":
    sys.exit(main())
