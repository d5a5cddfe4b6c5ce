"""This package's own training files (``.h5``; ``.db`` is read by :mod:`.spkdb`) as
conversion input, e.g. to export them to deepmd-kit or extxyz."""

from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple

from schnetpack_hessian.convert.base import Entry, Reader, is_hdf5, open_hdf5
from schnetpack_hessian.data.h5file import FORMAT_NAME
from schnetpack_hessian.data.io import (
    file_metadata,
    file_reactions,
    file_units,
    read_records,
)

__all__ = ["READER", "TrainingReader"]


class TrainingReader(Reader):
    """Training files written by this package; units from their metadata."""

    name = "training"

    def detect(self, path: Path) -> bool:
        """True for HDF5 files written by this package (damaged HDF5: an error)."""
        if not is_hdf5(path):
            return False
        with open_hdf5(path) as f:
            return f.attrs.get("format") == FORMAT_NAME

    def file_units(self, path: Path, options: Dict[str, Any]) -> Dict[str, str]:
        return file_units(path)

    def count(self, path: Path) -> Optional[int]:
        with open_hdf5(path) as f:
            return int(f["n_atoms"].shape[0])

    def reactions(self, path: Path) -> Optional[Tuple[Any, Dict[int, str]]]:
        ids, names = file_reactions(path)
        return None if ids is None else (ids, names)

    def prepare(self, files: Sequence[Path], options: Dict[str, Any]) -> Dict[str, Any]:
        md = file_metadata(files[0]) if len(files) == 1 else {}
        return {"metadata": {k: v for k, v in md.items() if not k.startswith("_")}}

    def entries(
        self, path: Path, options: Dict[str, Any], prepared: Dict[str, Any]
    ) -> Iterator[Entry]:
        for record in read_records(path, locate=False):
            yield None, lambda record=record: record


READER = TrainingReader()
