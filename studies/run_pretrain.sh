#!/bin/bash
# The pretrained models: the CPU preset's E+F and E+F+H PaiNN on every reaction of the
# GFN2-xTB set, exported with their cards into schnetpack_hessian/models/. Resumable.
set -u
cd "$(dirname "$0")"
export OMP_NUM_THREADS=1
spkhess-pretrain --data xtb --preset cpu --targets EF --name chon-xtb-ef -o pretrain >> pretrain.log 2>&1
spkhess-pretrain --data xtb --preset cpu --targets EFH --name chon-xtb-efh -o pretrain >> pretrain.log 2>&1
