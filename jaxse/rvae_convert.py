"""``python -m jaxse.rvae_convert``: the command of :mod:`jaxse.rvae.convert` under the name users type."""

import sys

from jaxse.rvae.convert import main

if __name__ == "__main__":
    sys.exit(main())
