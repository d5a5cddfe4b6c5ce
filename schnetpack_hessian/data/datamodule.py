"""``HessianDataModule``: SchNetPack's ``AtomsDataModule`` for ``.db`` and ``.h5`` files,
with reaction-aware splits and extrapolation test sets."""

import logging
import numbers
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Type, Union

import fasteners
import numpy as np
import torch
from schnetpack.data import AtomsDataFormat, AtomsDataModule, AtomsLoader
from schnetpack.data import SplittingStrategy

from schnetpack_hessian import properties as P
from schnetpack_hessian.data.io import backend_of, open_dataset
from schnetpack_hessian.data.loading import AUTO, loader_defaults
from schnetpack_hessian.data.stats import present_stats
from schnetpack_hessian.data.sampler import (
    MixBatchSampler,
    SizeBucketBatchSampler,
    structure_has_hessian,
    structure_sizes,
)
from schnetpack_hessian.data.splitting import (
    check_split_record,
    data_identity,
    dataset_labels,
    resolve_splitting,
    save_split,
    strategy_record,
)
from schnetpack_hessian.data.units import check_units
from schnetpack_hessian.data.validation import HessianDataError

__all__ = ["HessianDataModule"]

log = logging.getLogger(__name__)


def _check_size(name: str, value: Any):
    """A split size is ``None``, a count (integer >= 0) or a fraction in (0, 1].

    Raises:
        HessianDataError: anything else (``1.5``, ``-3``, ``True``, ``"80"``).
    """
    if value is None:
        return
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        if value >= 0:
            return
    elif (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and 0.0 < value <= 1.0
    ):
        return
    raise HessianDataError(
        f"HessianDataModule: {name}={value!r} is neither a count of structures (an "
        "integer >= 0; reactions for the reaction-based splittings) nor a fraction of "
        "the data (a number in (0, 1]); None takes the rest"
    )


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
      and ``extrapolation_<kind>_idx``, with a record of the data file (SHA-256 of its
      content, number of structures) and the strategy (class and parameters) that
      drew it; an existing split file is reused only for the same data and strategy
      (any strategy when neither ``splitting`` nor ``split_seed`` is given), else it is
      refused with the reason (delete it to draw a new split).  Split files of earlier
      versions, which hold no record, are refused the same way.
    - :meth:`has_training_hessians` tells whether the training split holds a
      Hessian; :class:`~schnetpack_hessian.task.HessianTask` refuses to train a
      nonzero Hessian loss weight on data without one unless
      ``allow_missing_hessians`` is set.

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
        num_workers: loader worker processes, or ``"auto"`` (default): 0 on CPU,
            up to 4 per rank on a GPU (:func:`~.loading.loader_defaults`);
            ``num_val_workers``/``num_test_workers`` follow it when ``None``.
        pin_memory: pinned batches, or ``"auto"`` (default): on CUDA only.
        mix: co-training weights of the training structures with and without a
            Hessian, e.g. ``{"hessian": 1, "ef_only": 4}``: every batch holds them in
            this ratio (:class:`~.sampler.MixBatchSampler`); ``None``: plain
            shuffling.  Merge a Hessian file and an energy/force file into one
            training file first (``spkhess-convert A.h5 B.h5 -o mixed.h5``).
        allow_missing_hessians: train a Hessian loss on a training split without a
            single Hessian (it then contributes nothing: an E/F training); default
            ``False``, an error.
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
        num_workers: Union[int, str] = AUTO,
        num_val_workers: Optional[int] = None,
        num_test_workers: Optional[int] = None,
        property_units: Optional[Dict[str, str]] = None,
        distance_unit: Optional[str] = None,
        data_workdir: Optional[str] = None,
        cleanup_workdir_stage: Optional[str] = "test",
        splitting: Union[str, SplittingStrategy, None] = None,
        pin_memory: Union[bool, str, None] = AUTO,
        split_seed: Optional[int] = None,
        extrapolation_kinds: Sequence[str] = ("irc", "nms"),
        size_buckets: Optional[int] = None,
        allow_missing_hessians: bool = False,
        mix: Optional[Mapping[str, float]] = None,
    ):
        if mix is not None and size_buckets is not None:
            raise HessianDataError(
                "HessianDataModule: give mix or size_buckets, not both (each decides "
                "which structures share a batch)"
            )
        for name, size in (
            ("num_train", num_train),
            ("num_val", num_val),
            ("num_test", num_test),
        ):
            _check_size(name, size)
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
            num_workers=0 if num_workers == AUTO else num_workers,
            num_val_workers=num_val_workers,
            num_test_workers=num_test_workers,
            property_units=property_units,
            distance_unit=distance_unit,
            data_workdir=data_workdir,
            cleanup_workdir_stage=cleanup_workdir_stage,
            splitting=None,
            pin_memory=False if pin_memory == AUTO else pin_memory,
        )
        # "auto": chosen for the trainer's device in setup (loading.loader_defaults)
        self._auto_loading = dict(
            workers=num_workers == AUTO,
            val_workers=num_val_workers is None,
            test_workers=num_test_workers is None,
            pin=pin_memory == AUTO,
        )
        self.datapath = datapath
        self.format = backend
        units, self.distance_unit = check_units(
            property_units, distance_unit, "HessianDataModule"
        )
        self.property_units = units or None
        self.splitting = resolve_splitting(splitting, split_seed)
        # neither strategy nor seed given: an existing split file's strategy is taken
        self._strategy_given = splitting is not None or split_seed is not None
        for kind in extrapolation_kinds:
            if kind not in P.KINDS:
                raise HessianDataError(
                    f"unknown kind {kind!r}, expected one of {P.KINDS}"
                )
        self.extrapolation_kinds = tuple(extrapolation_kinds)
        self.extrapolation_idx: Dict[str, List[int]] = {}
        self._extrapolation_dataloaders: Dict[str, AtomsLoader] = {}
        self.size_buckets = size_buckets
        self.allow_missing_hessians = bool(allow_missing_hessians)
        self.mix = None if mix is None else {k: float(v) for k, v in dict(mix).items()}

    def train_dataloader(self) -> AtomsLoader:
        if self.size_buckets is None and self.mix is None:
            return super().train_dataloader()
        if self._train_dataloader is None:
            seed = torch.initial_seed() % 2**32
            if self.mix is not None:
                try:
                    sampler = MixBatchSampler(
                        structure_has_hessian(self.train_dataset),
                        self.mix,
                        self.batch_size,
                        seed=seed,
                    )
                except ValueError as err:
                    raise HessianDataError(f"{self.datapath}: {err}") from err
            else:
                sampler = SizeBucketBatchSampler(
                    structure_sizes(self.train_dataset),
                    self.batch_size,
                    bucket_width=self.size_buckets,
                    seed=seed,
                )
            self._train_dataloader = AtomsLoader(
                self.train_dataset,
                batch_sampler=sampler,
                num_workers=self.num_workers,
                pin_memory=self._pin_memory,
            )
        return self._train_dataloader

    def _resolve_loading(self) -> None:
        """Settle the ``"auto"`` loader settings for the attached trainer's device
        (CPU when no trainer is attached)."""
        trainer = getattr(self, "trainer", None)
        device_type, local_ranks = "cpu", 1
        if trainer is not None:
            device_type = trainer.strategy.root_device.type
            local_ranks = max(1, len(getattr(trainer, "device_ids", []) or [0]))
        workers, pin = loader_defaults(device_type, local_ranks)
        auto = self._auto_loading
        if auto["workers"]:
            self.num_workers = workers
            if auto["val_workers"]:
                self.num_val_workers = workers
            if auto["test_workers"]:
                self.num_test_workers = workers
        if auto["pin"]:
            self._pin_memory = pin

    def get_stats(
        self, property: str, divide_by_atoms: bool, remove_atomref: bool
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation of ``property`` over the training structures
        that have it (a missing energy is NaN, docs/DATA.md; SchNetPack's statistics
        would turn NaN and offset every energy to NaN), as SchNetPack computes them:
        after the single-atom references, per atom if ``divide_by_atoms``,
        population standard deviation."""
        key = (property, divide_by_atoms, remove_atomref)
        if key not in self._stats:
            atomref = self.train_dataset.atomrefs if remove_atomref else None
            self._stats[key] = present_stats(
                self.train_dataloader(), property, divide_by_atoms, atomref
            )
        return self._stats[key]

    def setup(self, stage: Optional[str] = None):
        self._resolve_loading()
        datapath = (
            self.datapath if self.data_workdir is None else self._copy_to_workdir()
        )
        if self.dataset is None:
            dataset = open_dataset(
                datapath,
                property_units=self.property_units,
                distance_unit=self.distance_unit,
                load_properties=self.load_properties,
            )
            if len(dataset) == 0:
                raise HessianDataError(
                    f"{self.datapath}: the file holds no structures, there is nothing "
                    "to train on"
                )
            self.dataset = dataset
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
                save_split(
                    self.split_file,
                    {
                        "train_idx": self.train_idx,
                        "val_idx": self.val_idx,
                        "test_idx": self.test_idx,
                        **{
                            f"extrapolation_{k}_idx": v
                            for k, v in self.extrapolation_idx.items()
                        },
                    },
                    self._data_identity(),
                    strategy_record(self.splitting),
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

    def _data_identity(self) -> Dict[str, Any]:
        """:func:`~.splitting.data_identity` of the data file (hashed once)."""
        if getattr(self, "_identity", None) is None:
            self._identity = data_identity(self.datapath, len(self.dataset))
        return self._identity

    def _read_split_file(self):
        split = np.load(self.split_file)
        check_split_record(
            self.split_file,
            split,
            self._data_identity(),
            strategy_record(self.splitting) if self._strategy_given else None,
        )
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

    def has_training_hessians(self) -> bool:
        """True if at least one structure of the training split has a Hessian
        (reads structures until it finds one)."""
        if self.dataset is None:
            self.setup()
        dataset = self.train_dataset
        if P.hessian not in dataset.available_properties:
            return False
        for props in dataset.iter_properties(
            load_properties=[P.hessian], load_structure=False
        ):
            if not torch.isnan(props[P.hessian]).all():
                return True
        return False

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
