"""ORCA ``.hess`` files (+ ``.engrad`` for energy and gradient).

``$hessian`` holds the (3N, 3N) Cartesian Hessian in Hartree/Bohr², printed in column
blocks; ``$atoms`` the element, mass and coordinates [Bohr].  Energy [Hartree] and
gradient [Hartree/Bohr] come from the ``.engrad`` file with the same stem (required:
without energy and forces a structure cannot be trained on); forces = −gradient.
Records keep ORCA's units (Hartree, Bohr), declared in the output.
"""

from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from schnetpack_hessian.convert.base import (
    ConversionError,
    PathLike,
    Source,
    check_kind,
    declared_units,
    numbers_from_symbols,
)
from schnetpack_hessian.data.record import HessianRecord

__all__ = ["UNITS", "detect", "read", "parse_hess", "parse_engrad", "write_hess"]

UNITS = {
    "distance": "Bohr",
    "energy": "Hartree",
    "forces": "Hartree/Bohr",
    "hessian": "Hartree/Bohr/Bohr",
}


def detect(path: PathLike) -> bool:
    """True for ``*.hess`` files or folders holding them."""
    path = Path(path)
    return path.suffix == ".hess" or (path.is_dir() and any(path.glob("*.hess")))


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


def parse_hess(path: PathLike) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(numbers (N,), positions (N, 3) [Bohr], hessian (3N, 3N) [Hartree/Bohr²])``.

    Raises:
        ConversionError: missing blocks or sizes that do not match.
    """
    blocks = _blocks(Path(path).read_text())
    for name in ("hessian", "atoms"):
        if name not in blocks:
            raise ConversionError(f"{path}: no ${name} block")
    atoms = blocks["atoms"]
    n = int(atoms[0])
    if len(atoms) < n + 1:
        raise ConversionError(
            f"{path}: $atoms announces {n} atoms but lists {len(atoms) - 1}"
        )
    rows = [a.split() for a in atoms[1 : n + 1]]
    numbers = numbers_from_symbols([r[0] for r in rows], str(path))
    positions = np.array([[float(x) for x in r[2:5]] for r in rows])
    lines = blocks["hessian"]
    dim = int(lines[0])
    if dim != 3 * n:
        raise ConversionError(
            f"{path}: $hessian is {dim}x{dim} but $atoms has {n} atoms"
        )
    hessian = np.full((dim, dim), np.nan)
    k = 1
    while k < len(lines):
        cols = [int(c) for c in lines[k].split()]
        for r in range(dim):
            parts = lines[k + 1 + r].split()
            if int(parts[0]) != r:
                raise ConversionError(f"{path}: malformed $hessian row {parts[0]}")
            hessian[r, cols] = [float(v) for v in parts[1 : 1 + len(cols)]]
        k += dim + 1
    if np.isnan(hessian).any():
        raise ConversionError(f"{path}: $hessian block is incomplete")
    return numbers, positions, hessian


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


def _hess_files(paths: Sequence[PathLike]) -> List[Path]:
    files: List[Path] = []
    for p in map(Path, paths):
        files.extend(sorted(p.glob("*.hess")) if p.is_dir() else [p])
    return files


def read(
    paths: Sequence[PathLike],
    energy_unit: Optional[str] = None,
    distance_unit: Optional[str] = None,
    kind: Optional[str] = None,
    **_: Any,
) -> Source:
    """Read ORCA ``.hess`` files (or folders of them) with their ``.engrad`` files.

    Raises:
        ConversionError: a ``.engrad`` is missing or disagrees with the ``.hess``.
    """
    units = declared_units("ORCA", UNITS, energy_unit, distance_unit)
    check_kind(kind, ", ".join(map(str, paths)))
    files = _hess_files(paths)

    def records() -> Iterator[HessianRecord]:
        for i, f in enumerate(files):
            numbers, positions, hessian = parse_hess(f)
            engrad = f.with_suffix(".engrad")
            if not engrad.exists():
                raise ConversionError(
                    f"{f}: no {engrad.name} next to it; energy and gradient are required"
                )
            energy, gradient, pos_engrad = parse_engrad(engrad)
            if gradient.shape != positions.shape or not np.allclose(
                pos_engrad, positions, atol=1e-5
            ):
                raise ConversionError(f"{engrad}: geometry differs from {f.name}")
            yield HessianRecord(
                numbers=numbers,
                positions=positions,
                energy=energy,
                forces=-gradient,
                hessian=hessian,
                kind=kind or "other",
            )

    meta = {"source": "ORCA"}
    return Source(records(), units, meta, len(files), ", ".join(map(str, paths)))


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
