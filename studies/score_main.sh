#!/bin/bash
# Score the bulk study's trained main-contrast arms (100 %) while the other arms train.
set -u
cd "$(dirname "$0")"
export OMP_NUM_THREADS=1
spkhess-study --data xtb --preset cpu --threads 1 -o cpu_xtb \
  --arms EF-painn-100pct EFH-hvp-k2-painn-100pct EF-schnet-100pct EFH-hvp-k2-schnet-100pct \
  >> cpu_xtb_score.log 2>&1
