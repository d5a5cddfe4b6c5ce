#!/usr/bin/env python
"""Generate the reactive H/C/N/O critical-point set (or extend it).

Thin wrapper over :mod:`schnetpack_hessian.generate.cli`; see docs/GENERATE.md.
The shipped set was made with::

    python data_scripts/generate_reactive_set.py run \
        --reactions data_scripts/reactions_chon.yaml --workdir /work/gen_work \
        --out schnetpack_hessian/datasets/reactive_chon.h5
"""

import sys

try:  # tblite's C extension needs the system libgomp, not the one torch loads
    import tblite.interface  # noqa: F401
except ImportError:
    pass

from schnetpack_hessian.generate.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
