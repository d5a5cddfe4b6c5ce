#!/bin/bash
# The bulk study's trainings with the CPU preset (scored later: --train-only).
# Resumable: rerun it; finished trainings are kept, an interrupted one resumes.
set -u
cd "$(dirname "$0")"
export OMP_NUM_THREADS=1
spkhess-study --data xtb --preset cpu --threads 1 --train-only -o cpu_xtb >> cpu_xtb.log 2>&1
