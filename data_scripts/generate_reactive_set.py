#!/usr/bin/env python
"""Generate the reactive H/C/N/O critical-point set (or extend it).

Thin wrapper over ``spkhess-generate`` (:mod:`schnetpack_hessian.cli.generate`);
see docs/GENERATE.md.  The shipped set was made with::

    python data_scripts/generate_reactive_set.py run \
        --reactions data_scripts/reactions_chon.yaml --workdir /work/gen_work \
        --out schnetpack_hessian/datasets/reactive_chon.h5
"""

import sys

from schnetpack_hessian.cli.generate import main

if __name__ == "__main__":
    sys.exit(main())
