"""ORCA ``.hess`` files (+ ``.engrad`` for energy and gradient).

``$hessian`` holds the (3N, 3N) Cartesian Hessian in Hartree/Bohr², printed in column
blocks; ``$atoms`` the element, mass and coordinates [Bohr].  Energy [Hartree] and
gradient [Hartree/Bohr] come from the ``.engrad`` file with the same stem (required:
without energy and forces a structure cannot be trained on); forces = −gradient.
Records keep ORCA's units (Hartree, Bohr), declared in the output.
"""

from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from schnetpack_hessian.convert.base import (
    ConversionError,
    Entry,
    PathLike,
    Reader,
    numbers_from_symbols,
)
from schnetpack_hessian.data.record import HessianRecord

__all__ = ["UNITS", "READER", "OrcaReader", "parse_hess", "parse_engrad", "write_hess"]

UNITS = {
    "distance": "Bohr",
    "energy": "Hartree",
    "forces": "Hartree/Bohr",
    "hessian": "Hartree/Bohr/Bohr",
}


def _blocks(text: str) -> Dict[str, List[str]]:
    blocks: Dict[str, List[str]] = {}
    current = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("$"):
            current = stripped[1:].split()[0] if len(stripped) > 1 else ""
            blocks[current] = []
        elif current is not None and stripped:
            blocks[current].append(stripped)
    return blocks


def _hessian_block(lines: List[str], dim: int) -> np.ndarray:
    """The (dim, dim) matrix of a ``$hessian`` block printed in column blocks."""
    hessian = np.full((dim, dim), np.nan)
    k = 1
    while k < len(lines):
        try:
            cols = [int(c) for c in lines[k].split()]
        except ValueError:
            raise ConversionError(
                f"$hessian: expected a line of column numbers, got {lines[k]!r}"
            ) from None
        if not cols or min(cols) < 0 or max(cols) >= dim:
            raise ConversionError(
                f"$hessian: column numbers {cols} outside 0..{dim - 1}"
            )
        for r in range(dim):
            if k + 1 + r >= len(lines) or lines[k + 1 + r].startswith("$"):
                raise ConversionError(
                    f"$hessian: rows missing: columns {cols[0]}-{cols[-1]} end after "
                    f"{r} of {dim} rows"
                )
            parts = lines[k + 1 + r].split()
            if parts[0] != str(r):
                raise ConversionError(
                    f"$hessian: malformed row {parts[0]!r} (expected row {r}) in columns "
                    f"{cols[0]}-{cols[-1]}"
                )
            values = parts[1:]
            if len(values) != len(cols):
                raise ConversionError(
                    f"$hessian: row {r} has {len(values)} values for {len(cols)} columns"
                )
            try:
                hessian[r, cols] = [float(v) for v in values]
            except ValueError:
                raise ConversionError(
                    f"$hessian: row {r} has a non-numeric entry in {values}"
                ) from None
        k += dim + 1
    if np.isnan(hessian).any():
        raise ConversionError("$hessian block is incomplete")
    return hessian


def parse_hess(path: PathLike) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(numbers (N,), positions (N, 3) [Bohr], hessian (3N, 3N) [Hartree/Bohr²])``.

    Raises:
        ConversionError: missing blocks, sizes that do not match, missing rows or
            non-numeric entries.
    """
    blocks = _blocks(Path(path).read_text())
    for name in ("hessian", "atoms"):
        if name not in blocks:
            raise ConversionError(f"no ${name} block")
    atoms = blocks["atoms"]
    try:
        n = int(atoms[0])
        rows = [a.split() for a in atoms[1 : n + 1]]
        if len(rows) < n:
            raise ConversionError(
                f"$atoms announces {n} atoms but lists {len(atoms) - 1}"
            )
        numbers = numbers_from_symbols([r[0] for r in rows])
        positions = np.array([[float(x) for x in r[2:5]] for r in rows]).reshape(n, 3)
        dim = int(blocks["hessian"][0])
    except (ValueError, IndexError) as err:
        raise ConversionError(f"malformed $atoms or $hessian header ({err})") from err
    if dim != 3 * n:
        raise ConversionError(f"$hessian is {dim}x{dim} but $atoms has {n} atoms")
    return numbers, positions, _hessian_block(blocks["hessian"], dim)


def parse_engrad(path: PathLike) -> Tuple[float, np.ndarray, np.ndarray]:
    """``(energy [Hartree], gradient (N, 3) [Hartree/Bohr], positions (N, 3) [Bohr])``.

    Raises:
        ConversionError: malformed file.
    """
    values = [ln.strip() for ln in Path(path).read_text().splitlines()]
    values = [v for v in values if v and not v.startswith("#")]
    try:
        n = int(values[0])
        energy = float(values[1])
        gradient = np.array([float(v) for v in values[2 : 2 + 3 * n]]).reshape(n, 3)
        coords = [v.split() for v in values[2 + 3 * n : 2 + 4 * n]]
        positions = np.array([[float(x) for x in c[1:4]] for c in coords]).reshape(n, 3)
    except (ValueError, IndexError) as err:
        raise ConversionError(f"{path}: malformed .engrad file ({err})") from err
    return energy, gradient, positions


def _structure(path: Path) -> HessianRecord:
    numbers, positions, hessian = parse_hess(path)
    engrad = path.with_suffix(".engrad")
    if not engrad.exists():
        raise ConversionError(
            f"no {engrad.name} next to it; energy and gradient are required"
        )
    energy, gradient, pos_engrad = parse_engrad(engrad)
    if gradient.shape != positions.shape or not np.allclose(
        pos_engrad, positions, atol=1e-5
    ):
        raise ConversionError(f"{engrad}: geometry differs from {path.name}")
    return HessianRecord(
        numbers=numbers,
        positions=positions,
        energy=energy,
        forces=-gradient,
        hessian=hessian,
    )


class OrcaReader(Reader):
    """ORCA ``.hess`` files (or folders of them), each with its ``.engrad``; one
    structure per file, in ORCA's units (Hartree, Bohr)."""

    name = "orca"
    units = UNITS
    metadata = {"source": "ORCA"}

    def detect(self, path: Path) -> bool:
        """True for ``*.hess`` files or folders holding them."""
        path = Path(path)
        return path.suffix == ".hess" or (path.is_dir() and any(path.glob("*.hess")))

    def files(self, path: Path) -> List[Path]:
        return sorted(path.glob("*.hess")) if path.is_dir() else [path]

    def count(self, path: Path) -> Optional[int]:
        return 1

    def entries(
        self, path: Path, options: Dict[str, Any], prepared: Dict[str, Any]
    ) -> Iterator[Entry]:
        yield None, lambda: _structure(path)


READER = OrcaReader()


def write_hess(
    path: PathLike,
    numbers: np.ndarray,
    positions: np.ndarray,
    hessian: np.ndarray,
    masses: Optional[np.ndarray] = None,
    energy: Optional[float] = None,
    gradient: Optional[np.ndarray] = None,
):
    """Write an ORCA-style ``.hess`` (and ``.engrad`` if energy and gradient are given),
    positions in Bohr, Hessian in Hartree/Bohr², 5 columns per block, 17 digits."""
    from ase.data import atomic_masses, chemical_symbols

    n = len(numbers)
    masses = atomic_masses[numbers] if masses is None else masses
    out = ["", "$orca_hessian_file", "", "$act_atom", "  0", "", "$hessian", str(3 * n)]
    for start in range(0, 3 * n, 5):
        cols = list(range(start, min(start + 5, 3 * n)))
        out.append("        " + "".join(f"{c:>25d}" for c in cols))
        for r in range(3 * n):
            out.append(f"{r:6d}  " + "".join(f"{hessian[r, c]:25.17e}" for c in cols))
    out += ["", "$atoms", str(n)]
    for z, m, p in zip(numbers, masses, positions):
        out.append(
            f" {chemical_symbols[z]:2s} {m:12.5f} " + " ".join(f"{x:25.17e}" for x in p)
        )
    out += ["", "$end", ""]
    Path(path).write_text("\n".join(out))
    if energy is not None and gradient is not None:
        lines = [
            "#",
            "# Number of atoms",
            "#",
            f" {n}",
            "#",
            "# The current total energy in Eh",
            "#",
            f" {energy:.17e}",
            "#",
            "# The current gradient in Eh/bohr",
            "#",
        ]
        lines += [f" {g:.17e}" for g in np.ravel(gradient)]
        lines += ["#", "# The atomic numbers and current coordinates in Bohr", "#"]
        lines += [
            f" {z} " + " ".join(f"{x:.17e}" for x in p)
            for z, p in zip(numbers, positions)
        ]
        Path(path).with_suffix(".engrad").write_text("\n".join(lines) + "\n")
