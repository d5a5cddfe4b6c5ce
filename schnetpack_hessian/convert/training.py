"""This package's own training files (``.h5``; ``.db`` is read by :mod:`.spkdb`) as
conversion input, e.g. to export them to deepmd-kit or extxyz."""

from typing import Any, Iterator, Optional, Sequence

import h5py

from schnetpack_hessian.convert.base import (
    ConversionError,
    PathLike,
    Source,
    check_kind,
)
from schnetpack_hessian.data.hdf5 import FORMAT_NAME
from schnetpack_hessian.data.io import file_metadata, file_units, read_records
from schnetpack_hessian.data.record import HessianRecord

__all__ = ["detect", "read"]


def detect(path: PathLike) -> bool:
    """True for HDF5 files written by this package."""
    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("format") == FORMAT_NAME
    except (OSError, ValueError):
        return False


def read(paths: Sequence[PathLike], kind: Optional[str] = None, **_: Any) -> Source:
    """Read training files (all with the same units) in their stored units."""
    check_kind(kind, ", ".join(map(str, paths)))
    units = None
    total = 0
    for p in paths:
        u = file_units(p)
        if units is not None and u != units:
            raise ConversionError(
                f"{p}: units {u} differ from the other inputs' {units}"
            )
        units = u
        with h5py.File(p, "r") as f:
            total += int(f["n_atoms"].shape[0])

    def records() -> Iterator[HessianRecord]:
        for p in paths:
            for rec in read_records(p):
                if kind is not None:
                    rec.kind = kind
                yield rec

    md = file_metadata(paths[0]) if len(paths) == 1 else {}
    md = {k: v for k, v in md.items() if not k.startswith("_")}
    return Source(records(), units, md, total, ", ".join(map(str, paths)))
