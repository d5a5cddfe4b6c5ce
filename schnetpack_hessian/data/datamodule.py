"""``HessianDataModule``: SchNetPack's ``AtomsDataModule`` for ``.db`` and ``.h5`` files,
with reaction-aware splits and extrapolation test sets."""

import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Type, Union

import fasteners
import numpy as np
import torch
from schnetpack.data import AtomsDataFormat, AtomsDataModule, AtomsLoader
from schnetpack.data import SplittingStrategy

from schnetpack_hessian import properties as P
from schnetpack_hessian.data.io import atomic_output, backend_of, open_dataset
from schnetpack_hessian.data.sampler import SizeBucketBatchSampler, structure_sizes
from schnetpack_hessian.data.splitting import dataset_labels, resolve_splitting
from schnetpack_hessian.data.units import check_units
from schnetpack_hessian.data.validation import HessianDataError

__all__ = ["HessianDataModule"]

log = logging.getLogger(__name__)


class HessianDataModule(AtomsDataModule):
    """``AtomsDataModule`` that reads ``.db`` and ``.h5`` training files.

    Everything of :class:`schnetpack.data.AtomsDataModule` works as there (transforms,
    ``property_units`` / ``distance_unit`` conversion of every property including the
    Hessian, ``get_stats`` for energy standardisation, split files, workers, samplers,
    ``data_workdir``).  In addition:

    - ``splitting`` may be ``"random"``, ``"reaction"`` (no reaction in two splits),
      ``"critical"`` (the study's protocol: train/val/test on reactant|product|ts) or any
      :class:`~schnetpack.data.SplittingStrategy`; sizes are counts, fractions or
      ``None`` (the rest) and count reactions for the reaction-based strategies.
    - the structures of each ``extrapolation_kinds`` label (default ``irc``, ``nms``)
      are available through :meth:`extrapolation_dataloader`.
    - the split file stores ``train_idx``, ``val_idx``, ``test_idx`` (SchNetPack's keys)
      and ``extrapolation_<kind>_idx``; an existing split file is reused.

    Args:
        datapath: ``.db`` or ``.h5`` training file.
        batch_size: training batch size.
        num_train: training split size.
        num_val: validation split size.
        num_test: test split size (``None``: the rest).
        split_file: ``.npz`` file to store/reuse the split.
        splitting: split strategy (name or instance).
        split_seed: seed for the named strategies.
        extrapolation_kinds: ``kind`` labels offered as extrapolation test sets.
        property_units: e.g. ``{"energy": "kcal/mol", "hessian": "kcal/mol/Ang/Ang"}``.
        distance_unit: e.g. ``"Ang"`` or ``"Bohr"``.
        size_buckets: batch training structures of similar size together, in buckets
            of this many atom counts (:class:`~.sampler.SizeBucketBatchSampler`,
            seeded by torch's seed); ``None``: SchNetPack's plain shuffling.
        **others: as :class:`schnetpack.data.AtomsDataModule`.
    """

    def __init__(
        self,
        datapath: str,
        batch_size: int,
        num_train: Union[int, float, None] = None,
        num_val: Union[int, float, None] = None,
        num_test: Union[int, float, None] = None,
        split_file: Optional[str] = "split.npz",
        format: Optional[Any] = None,
        load_properties: Optional[List[str]] = None,
        val_batch_size: Optional[int] = None,
        test_batch_size: Optional[int] = None,
        transforms: Optional[List[torch.nn.Module]] = None,
        train_transforms: Optional[List[torch.nn.Module]] = None,
        val_transforms: Optional[List[torch.nn.Module]] = None,
        test_transforms: Optional[List[torch.nn.Module]] = None,
        train_sampler_cls: Optional[Type] = None,
        train_sampler_args: Optional[Dict[str, Any]] = None,
        num_workers: int = 8,
        num_val_workers: Optional[int] = None,
        num_test_workers: Optional[int] = None,
        property_units: Optional[Dict[str, str]] = None,
        distance_unit: Optional[str] = None,
        data_workdir: Optional[str] = None,
        cleanup_workdir_stage: Optional[str] = "test",
        splitting: Union[str, SplittingStrategy, None] = None,
        pin_memory: Optional[bool] = False,
        split_seed: Optional[int] = None,
        extrapolation_kinds: Sequence[str] = ("irc", "nms"),
        size_buckets: Optional[int] = None,
    ):
        datapath = str(datapath)
        backend = backend_of(datapath)
        # SchNetPack's resolve_format only knows ".db": hand it one, then set ours.
        super().__init__(
            datapath=datapath if backend == "db" else datapath + ".db",
            batch_size=batch_size,
            num_train=num_train,
            num_val=num_val,
            num_test=num_test,
            split_file=split_file,
            format=AtomsDataFormat.ASE,
            load_properties=load_properties,
            val_batch_size=val_batch_size,
            test_batch_size=test_batch_size,
            transforms=transforms,
            train_transforms=train_transforms,
            val_transforms=val_transforms,
            test_transforms=test_transforms,
            train_sampler_cls=train_sampler_cls,
            train_sampler_args=train_sampler_args,
            num_workers=num_workers,
            num_val_workers=num_val_workers,
            num_test_workers=num_test_workers,
            property_units=property_units,
            distance_unit=distance_unit,
            data_workdir=data_workdir,
            cleanup_workdir_stage=cleanup_workdir_stage,
            splitting=None,
            pin_memory=pin_memory,
        )
        self.datapath = datapath
        self.format = backend
        units, self.distance_unit = check_units(
            property_units, distance_unit, "HessianDataModule"
        )
        self.property_units = units or None
        self.splitting = resolve_splitting(splitting, split_seed)
        for kind in extrapolation_kinds:
            if kind not in P.KINDS:
                raise HessianDataError(
                    f"unknown kind {kind!r}, expected one of {P.KINDS}"
                )
        self.extrapolation_kinds = tuple(extrapolation_kinds)
        self.extrapolation_idx: Dict[str, List[int]] = {}
        self._extrapolation_dataloaders: Dict[str, AtomsLoader] = {}
        self.size_buckets = size_buckets

    def train_dataloader(self) -> AtomsLoader:
        if self.size_buckets is None:
            return super().train_dataloader()
        if self._train_dataloader is None:
            sampler = SizeBucketBatchSampler(
                structure_sizes(self.train_dataset),
                self.batch_size,
                bucket_width=self.size_buckets,
                seed=torch.initial_seed() % 2**32,
            )
            self._train_dataloader = AtomsLoader(
                self.train_dataset,
                batch_sampler=sampler,
                num_workers=self.num_workers,
                pin_memory=self._pin_memory,
            )
        return self._train_dataloader

    def setup(self, stage: Optional[str] = None):
        datapath = (
            self.datapath if self.data_workdir is None else self._copy_to_workdir()
        )
        if self.dataset is None:
            self.dataset = open_dataset(
                datapath,
                property_units=self.property_units,
                distance_unit=self.distance_unit,
                load_properties=self.load_properties,
            )
            if self.train_idx is None:
                self._load_partitions()
            self._train_dataset = self.dataset.subset(self.train_idx)
            self._val_dataset = self.dataset.subset(self.val_idx)
            self._test_dataset = self.dataset.subset(self.test_idx)
            self._setup_transforms()

    def _load_partitions(self):
        if self.split_file is not None and os.path.exists(self.split_file):
            self._read_split_file()
            return
        if self.num_train is None or self.num_val is None:
            raise HessianDataError(
                "no split file found: set num_train and num_val to create a split"
            )
        if self.split_file is None:
            # nothing is written: no lock, so read-only directories work
            self._split()
            return
        lock_path = self.split_file + ".lock"
        with fasteners.InterProcessLock(lock_path):
            if os.path.exists(self.split_file):
                self._read_split_file()
            else:
                self._split()
                # written whole and renamed: readers without the lock never see half
                with atomic_output(self.split_file, overwrite=True) as tmp:
                    with open(tmp, "wb") as fh:
                        np.savez(
                            fh,
                            train_idx=np.asarray(self.train_idx, dtype=np.int64),
                            val_idx=np.asarray(self.val_idx, dtype=np.int64),
                            test_idx=np.asarray(self.test_idx, dtype=np.int64),
                            **{
                                f"extrapolation_{k}_idx": np.asarray(v, dtype=np.int64)
                                for k, v in self.extrapolation_idx.items()
                            },
                        )
        try:
            os.remove(lock_path)
        except FileNotFoundError:
            pass

    def _split(self):
        parts = self.splitting.split(
            self.dataset, self.num_train, self.num_val, self.num_test
        )
        self.train_idx, self.val_idx, self.test_idx = (list(map(int, p)) for p in parts)
        self.extrapolation_idx = self._find_extrapolation()

    def _read_split_file(self):
        split = np.load(self.split_file)
        self.train_idx = split["train_idx"].tolist()
        self.val_idx = split["val_idx"].tolist()
        self.test_idx = split["test_idx"].tolist()
        n = len(self.dataset)
        for name in ("train_idx", "val_idx", "test_idx"):
            idx = split[name]
            if idx.size and (idx.min() < 0 or idx.max() >= n):
                raise HessianDataError(
                    f"{self.split_file}: {name} holds indices outside 0..{n - 1} of "
                    f"{self.datapath}; the split belongs to another data set"
                )
        saved = {
            k: split[f"extrapolation_{k}_idx"].tolist()
            for k in self.extrapolation_kinds
            if f"extrapolation_{k}_idx" in split
        }
        self.extrapolation_idx = (
            saved
            if len(saved) == len(self.extrapolation_kinds)
            else self._find_extrapolation()
        )
        for name, size in (("num_train", self.num_train), ("num_val", self.num_val)):
            got = len(getattr(self, name.replace("num_", "") + "_idx"))
            if isinstance(size, int) and size != got:
                log.warning(
                    "%s: %s=%d but the split file has %d",
                    self.split_file,
                    name,
                    size,
                    got,
                )

    def _find_extrapolation(self) -> Dict[str, List[int]]:
        if not self.extrapolation_kinds:
            return {}
        try:
            codes = dataset_labels(self.dataset, P.kind)
        except HessianDataError:
            return {k: [] for k in self.extrapolation_kinds}
        return {
            k: np.flatnonzero(codes == P.KINDS.index(k)).tolist()
            for k in self.extrapolation_kinds
        }

    def extrapolation_dataset(self, kind: str):
        """Dataset of all structures labelled ``kind`` (test transforms applied).

        Raises:
            HessianDataError: ``kind`` is not one of ``extrapolation_kinds``.
        """
        if kind not in self.extrapolation_kinds:
            raise HessianDataError(
                f"{kind!r} is not an extrapolation kind; choose from "
                f"{self.extrapolation_kinds} (constructor argument extrapolation_kinds)"
            )
        if self.dataset is None:
            self.setup()
        ds = self.dataset.subset(self.extrapolation_idx[kind])
        ds.transforms = self.test_transforms
        return ds

    def extrapolation_dataloader(self, kind: str) -> AtomsLoader:
        """Loader over the ``kind`` extrapolation set (e.g. ``"irc"``, ``"nms"``),
        batched as the test set."""
        if kind not in self._extrapolation_dataloaders:
            self._extrapolation_dataloaders[kind] = AtomsLoader(
                self.extrapolation_dataset(kind),
                batch_size=self.test_batch_size,
                num_workers=self.num_test_workers,
                pin_memory=self._pin_memory,
            )
        return self._extrapolation_dataloaders[kind]

    def extrapolation_dataloaders(self) -> Dict[str, AtomsLoader]:
        """``{kind: loader}`` for every extrapolation kind."""
        return {k: self.extrapolation_dataloader(k) for k in self.extrapolation_kinds}
