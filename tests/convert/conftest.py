"""Fixtures that write each external format in its real layout, from records with
physically consistent energies, forces and Hessians (a quadratic model surface)."""

import pickle
import sys
import types
from pathlib import Path
from typing import List, Sequence

import h5py
import numpy as np
import pytest
import torch
from ase.data import chemical_symbols

from schnetpack_hessian.data.record import HessianRecord
from schnetpack_hessian.data.testing import invariant_surface


def quadratic_path(
    numbers: Sequence[int],
    n_frames: int,
    seed: int = 0,
    step: float = 0.02,
    kind: str = "irc",
    reaction: int = 0,
) -> List[HessianRecord]:
    """Frames along a line on a smooth rigid-motion-invariant surface
    (:func:`~schnetpack_hessian.data.testing.invariant_surface`): exact E, F, H that
    pass the physics checks (the name is historical)."""
    rng = np.random.default_rng(seed)
    n = len(numbers)
    surface = invariant_surface(rng, n)
    x0 = rng.normal(size=3 * n) * 1.2
    v = rng.normal(size=3 * n)
    v /= np.linalg.norm(v)
    e0 = -100.0 * n
    out = []
    for k in range(n_frames):
        x = x0 + k * step * np.sqrt(3 * n) * v
        energy, forces, hessian = surface(x)
        out.append(
            HessianRecord(
                numbers=np.asarray(numbers),
                positions=x.reshape(n, 3),
                energy=float(e0 + energy),
                forces=forces,
                hessian=hessian,
                kind=kind,
                reaction=reaction,
            )
        )
    return out


# ---------------------------------------------------------------- OpenREACT-CHON-EFH
def write_openreact(
    path: Path,
    groups: dict,
    width: int = None,
    gradient: bool = False,
    flat_species=True,
):
    """pyanitools-style file: group → records of one molecule, padded to ``width``
    atoms with b'' species and zero coordinates; a stray ``iform`` dataset."""
    with h5py.File(path, "w") as f:
        for name, recs in groups.items():
            n = recs[0].n_atoms
            w = width or n
            grp = f.create_group(name)
            species = [chemical_symbols[z].encode() for z in recs[0].numbers] + [
                b""
            ] * (w - n)
            grp["species"] = np.array(species, dtype="S2")
            coords = np.zeros((len(recs), w, 3))
            forces = np.zeros((len(recs), w, 3))
            hess = np.zeros((len(recs), 3 * w, 3 * w))
            for m, r in enumerate(recs):
                coords[m, :n] = r.positions
                forces[m, :n] = -r.forces if gradient else r.forces
                hess[m, : 3 * n, : 3 * n] = r.hessian
            grp["coordinates"] = coords
            grp["energies"] = np.array([r.energy for r in recs])
            grp["forces"] = forces
            grp["hessian"] = hess
            grp["iform"] = np.arange(3, dtype=np.int32)


# ---------------------------------------------------------------- HORM LMDB
def _fake_pyg():
    """Classes named like PyG's, so that pickles reference ``torch_geometric.data``."""
    data_mod = types.ModuleType("torch_geometric.data.data")
    storage_mod = types.ModuleType("torch_geometric.data.storage")

    class Data:
        def __init__(self, **kwargs):
            store = GlobalStorage()
            store.__dict__["_mapping"] = dict(kwargs)
            store.__dict__["_parent"] = self
            self.__dict__["_edge_attr_cls"] = DataEdgeAttr
            self.__dict__["_tensor_attr_cls"] = DataTensorAttr
            self.__dict__["_store"] = store

    class GlobalStorage:
        pass

    class DataEdgeAttr:
        pass

    class DataTensorAttr:
        pass

    for cls, mod in (
        (Data, data_mod),
        (DataEdgeAttr, data_mod),
        (DataTensorAttr, data_mod),
        (GlobalStorage, storage_mod),
    ):
        cls.__module__ = mod.__name__
        cls.__qualname__ = cls.__name__
        setattr(mod, cls.__name__, cls)
    return data_mod, storage_mod


def write_horm_lmdb(
    path: Path, records: Sequence[HessianRecord], ae_offset: float = 5.0
):
    """An LMDB file laid out like HORM's: keys b"0".., b"length"; pickled PyG 2.x
    ``Data`` with float32 tensors, int32 ``charges`` (atomic numbers), flat hessian."""
    lmdb = pytest.importorskip("lmdb")
    data_mod, storage_mod = _fake_pyg()
    saved = {
        k: sys.modules.get(k)
        for k in (
            "torch_geometric",
            "torch_geometric.data",
            "torch_geometric.data.data",
            "torch_geometric.data.storage",
        )
    }
    sys.modules.update(
        {
            "torch_geometric": types.ModuleType("torch_geometric"),
            "torch_geometric.data": types.ModuleType("torch_geometric.data"),
            "torch_geometric.data.data": data_mod,
            "torch_geometric.data.storage": storage_mod,
        }
    )
    try:
        env = lmdb.open(str(path), subdir=False, map_size=1 << 26, meminit=False)
        with env.begin(write=True) as txn:
            for i, r in enumerate(records):
                n = r.n_atoms
                one_hot = torch.zeros(n, 5)
                d = data_mod.Data(
                    pos=torch.tensor(r.positions, dtype=torch.float32),
                    rxn=torch.tensor(7),
                    energy=torch.tensor(r.energy, dtype=torch.float32),
                    ae=torch.tensor(r.energy + ae_offset, dtype=torch.float32),
                    forces=torch.tensor(r.forces, dtype=torch.float32),
                    charges=torch.tensor(r.numbers, dtype=torch.int32),
                    one_hot=one_hot,
                    natoms=torch.tensor(n),
                    hessian=torch.tensor(r.hessian.reshape(-1), dtype=torch.float32),
                )
                txn.put(str(i).encode("ascii"), pickle.dumps(d, protocol=4))
            txn.put(b"length", pickle.dumps(len(records)))
        env.close()
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


@pytest.fixture
def path_records() -> List[HessianRecord]:
    """Eight frames of a 4-atom molecule (C, H, O, H) on a quadratic surface."""
    return quadratic_path([6, 1, 8, 1], 8, seed=3)


@pytest.fixture(name="quadratic_path")
def _quadratic_path_fixture():
    """:func:`quadratic_path`."""
    return quadratic_path


@pytest.fixture(name="write_openreact")
def _write_openreact_fixture():
    """:func:`write_openreact`."""
    return write_openreact


@pytest.fixture(name="write_horm_lmdb")
def _write_horm_lmdb_fixture():
    """:func:`write_horm_lmdb`."""
    return write_horm_lmdb
