"""Writing SchNetPack's ``.db`` training files (buffered transactions of storage dicts)
and reading their labels.

Plain ASE and numpy, without torch, so that converters and the generator write files
without loading it; :class:`~.ase_db.HessianASEAtomsData` reads them.
"""

from typing import Dict, List

import numpy as np
from ase import Atoms
from ase.db.core import Database

from schnetpack_hessian import properties as P
from schnetpack_hessian.data.record import kind_name

__all__ = ["DBAppender", "read_db_labels"]


class DBAppender:
    """Appends storage dicts to an ASE database in transactions of ``buffer_size``."""

    def __init__(self, conn: Database, buffer_size: int = 512):
        self.conn = conn
        self.buffer_size = buffer_size
        self._buffer: List[Dict[str, np.ndarray]] = []
        with conn:
            self.properties = list(conn.metadata["_property_unit_dict"])

    def add(self, data: Dict[str, np.ndarray]):
        """Queue one structure (storage arrays, see :mod:`~.storage`)."""
        self._buffer.append(data)
        if len(self._buffer) >= self.buffer_size:
            self.flush()

    def flush(self):
        """Write the buffered structures in one transaction."""
        buf, self._buffer = self._buffer, []
        with self.conn:
            for d in buf:
                atoms = Atoms(
                    numbers=d["numbers"],
                    positions=d["positions"],
                    cell=d["cell"],
                    pbc=d["pbc"],
                )
                kvp = {}
                if P.kind in d:
                    kvp[P.kind] = kind_name(np.asarray(d[P.kind])[0])
                if P.reaction in d:
                    kvp[P.reaction] = int(np.asarray(d[P.reaction])[0])
                self.conn.write(
                    atoms,
                    key_value_pairs=kvp,
                    data={p: np.asarray(d[p]) for p in self.properties},
                )


def read_db_labels(conn: Database, name: str) -> np.ndarray:
    """A per-structure label (``kind`` or ``reaction``) of every row, in row order, as
    int64 ``(n_rows,)``: from the rows' key-value pairs where they hold it (no row
    data is read), else from the row data."""
    values = np.empty(conn.count(), dtype=np.int64)
    for row in conn.select(include_data=False):
        kvp = row.key_value_pairs
        if name not in kvp:
            values[row.id - 1] = int(np.asarray(conn.get(row.id).data[name])[0])
        elif name == P.kind:
            values[row.id - 1] = P.KINDS.index(kvp[name])
        else:
            values[row.id - 1] = int(kvp[name])
    return values
