#!/bin/bash
# Score named trained arms of the bulk study while other arms train, e.g.
#   bash score_arms.sh EF-painn-25pct EFH-hvp-k2-painn-25pct
set -u
cd "$(dirname "$0")"
export OMP_NUM_THREADS=1
spkhess-study --data xtb --preset cpu --threads 1 -o cpu_xtb --arms "$@" \
  >> cpu_xtb_score.log 2>&1
