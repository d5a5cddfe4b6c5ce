"""What every converter shares: the :class:`Reader` interface a format implements,
the error class, and helpers for files, elements and force conventions."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence
from typing import Tuple, Union

import logging

import h5py
import numpy as np

from schnetpack_hessian.data.record import HessianRecord
from schnetpack_hessian.data.validation import HessianDataError

__all__ = [
    "COMMON_OPTIONS",
    "ConversionError",
    "Entry",
    "Option",
    "Reader",
    "Source",
    "PathLike",
    "has_signature",
    "require_energy_and_forces",
    "is_hdf5",
    "open_hdf5",
    "numbers_from_symbols",
    "force_sign_score",
    "decide_force_sign",
    "FORCES_SIGN",
]

log = logging.getLogger(__name__)

PathLike = Union[str, Path]

#: Driver options every format takes (units and kind are handled by the driver).
COMMON_OPTIONS = ("energy_unit", "distance_unit", "kind")
#: HDF5 files start with this signature (at offset 0, 512, 1024, ...).
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: SQLite files (ASE ``.db``) start with this header.
SQLITE_SIGNATURE = b"SQLite format 3\x00"


class ConversionError(HessianDataError):
    """An input file cannot be converted (layout, units, labels); names file and index."""


@dataclass
class Source:
    """Records read from inputs by :func:`~schnetpack_hessian.convert.open_source`.

    Attributes:
        records: iterator of records (consumed once; streamed), each with its
            :class:`~schnetpack_hessian.data.record.Origin`.
        units: units of the records (keys ``distance``, ``energy``, ``forces``,
            ``hessian``), the same for every input.
        metadata: file metadata to store (``source``, ``level_of_theory``, ...).
        total: number of records if known cheaply (for the progress bar).
        name: the inputs, for messages.
        format: the format name.
    """

    records: Iterator[HessianRecord]
    units: Dict[str, str]
    metadata: Dict[str, Any] = field(default_factory=dict)
    total: Optional[int] = None
    name: str = ""
    format: str = ""


#: One structure to come: ``(group/frame name or None, function that reads it)``.
#: Readers hand out the reading as a function so that the driver can say which
#: structure a parser failure belongs to.
Entry = Tuple[Optional[str], Callable[[], HessianRecord]]


@dataclass(frozen=True)
class Option:
    """A reader option: its default and what it means (for messages and ``--help``)."""

    default: Any
    help: str
    choices: Optional[Tuple[Any, ...]] = None


#: The ``forces_sign`` option of formats whose stored "forces" are checked.
FORCES_SIGN = Option(
    "auto",
    "whether the stored 'forces' are -dE/dR ('forces') or dE/dR ('gradient')",
    ("auto", "forces", "gradient"),
)


class Reader:
    """One input format: what it is called, how it is found, its options and units.

    A format declares

    - ``name`` and ``detect(path)``;
    - ``units``: the units the format fixes (keys ``distance``, ``energy``,
      ``forces``, ``hessian``), or ``None`` when a file declares its own
      (:meth:`file_units`) or the user must (``--energy-unit``/``--distance-unit``);
    - ``options``: the options it takes besides :data:`COMMON_OPTIONS`; any other
      option is an error;
    - ``metadata``: what every converted file records about the source;

    and reads: :meth:`files` expands an input into files, :meth:`count` counts their
    structures if cheap, :meth:`prepare` sees all files before reading (cross-file
    labels, conventions) and :meth:`entries` hands out one :data:`Entry` per
    structure.  The driver (:func:`schnetpack_hessian.convert.open_source`) does
    everything else: option and unit checks, kind overrides, counting, origins,
    reaction ids unique over several inputs (:meth:`reactions`, names kept) and
    wrapping every parser failure as ``"<input>: structure <k> (<group>): <problem>"``.
    """

    name: str = ""
    units: Optional[Dict[str, str]] = None
    options: Dict[str, Option] = {}
    metadata: Dict[str, Any] = {}
    #: True if reaction ids of all inputs index one table (the same id is the same
    #: reaction in every input, as in OpenREACT's three files); else each input's ids
    #: are its own and the driver makes them unique over the inputs.
    shared_reactions: bool = False

    def detect(self, path: Path) -> bool:
        """True if ``path`` is in this format."""
        raise NotImplementedError

    def files(self, path: Path) -> List[Path]:
        """The files of one input (a folder may hold several)."""
        return [path]

    def file_units(self, path: Path, options: Dict[str, Any]) -> Dict[str, str]:
        """Units a file declares itself (any of the four keys; empty if none)."""
        return {}

    def count(self, path: Path) -> Optional[int]:
        """Number of structures in ``path`` if known cheaply."""
        return None

    def reactions(self, path: Path) -> Optional[Tuple[Any, Dict[int, str]]]:
        """Reaction ids of ``path``'s structures and ``{id: name}`` if known cheaply
        (``None``: only known while reading; the ids are then always shifted past
        those of earlier inputs)."""
        return None

    def prepare(self, files: Sequence[Path], options: Dict[str, Any]) -> Dict[str, Any]:
        """Look at all files before reading (cross-file labels, conventions).

        Returns:
            State handed to :meth:`entries`; its ``"metadata"`` entry (if any) is
            stored in the output next to :attr:`metadata`.
        """
        return {}

    def entries(
        self, path: Path, options: Dict[str, Any], prepared: Dict[str, Any]
    ) -> Iterator[Entry]:
        """One :data:`Entry` per structure of ``path``, in file order."""
        raise NotImplementedError


def require_energy_and_forces(
    record: HessianRecord, fmt: str, path: PathLike, index: int
) -> None:
    """Exporters whose format has no way to say "missing" need both targets.

    Raises:
        ConversionError: the record lacks its energy or forces (named with its
            origin, else ``path`` and ``index``).
    """
    missing = [
        name
        for name, value in (("energy", record.energy), ("forces", record.forces))
        if value is None
    ]
    if missing:
        where = record.origin or f"{path}, structure {index}"
        raise ConversionError(
            f"{where}: has no {' and no '.join(missing)}; {fmt} output holds energy "
            "and forces for every structure (write a .h5 or .db training file, where "
            "a missing target is stored as NaN)"
        )


def has_signature(path: PathLike, signature: bytes, offsets=(0,)) -> bool:
    """True if the file starts with ``signature`` at one of ``offsets``."""
    path = Path(path)
    if not path.is_file():
        return False
    with open(path, "rb") as fh:
        for offset in offsets:
            fh.seek(offset)
            if fh.read(len(signature)) == signature:
                return True
    return False


def open_hdf5(path: PathLike) -> h5py.File:
    """Open an HDF5 input for reading.

    Raises:
        ConversionError: the file has the HDF5 signature but cannot be opened
            (truncated or corrupt), or is not HDF5 at all.
    """
    try:
        return h5py.File(path, "r")
    except (OSError, ValueError) as err:
        if has_signature(path, HDF5_SIGNATURE, (0, 512, 1024, 2048)):
            raise ConversionError(
                f"{path}: HDF5 file cannot be read, it is truncated or corrupt ({err})"
            ) from err
        raise ConversionError(f"{path}: not an HDF5 file ({err})") from err


def is_hdf5(path: PathLike) -> bool:
    """True for HDF5 files (by signature; a damaged one too)."""
    return has_signature(path, HDF5_SIGNATURE, (0, 512, 1024, 2048))


def numbers_from_symbols(symbols: Sequence[Any]) -> np.ndarray:
    """Atomic numbers from element symbols (str/bytes) or numbers.

    Raises:
        ConversionError: unknown element (located by the driver).
    """
    from ase.data import atomic_numbers

    out = []
    for s in symbols:
        if isinstance(s, (bytes, np.bytes_)):
            s = s.decode()
        if isinstance(s, str):
            if s not in atomic_numbers or atomic_numbers[s] == 0:
                raise ConversionError(f"unknown element {s!r}")
            out.append(atomic_numbers[s])
        else:
            out.append(int(s))
    return np.asarray(out, dtype=np.int64)


def force_sign_score(
    records: Sequence[HessianRecord], max_step: float = 0.3
) -> "tuple[float, int]":
    """Evidence whether stored "forces" are −dE/dR (score > 0) or dE/dR (score < 0).

    Uses neighbouring conformers of the same molecule (e.g. points of an IRC path or
    normal-mode displacements) closer than ``max_step`` (RMS displacement, distance
    unit): the trapezoid rule says ``E_b − E_a ≈ −½ (F_a + F_b)·(x_b − x_a)`` for
    forces, and with Hessians ``F_b − F_a ≈ −½ (H_a + H_b)(x_b − x_a)``.

    Returns:
        ``(score, n_votes)``: mean vote in ``[-1, 1]`` and how many pairs voted.
    """
    votes: List[float] = []
    for a, b in zip(records[:-1], records[1:]):
        if (
            a.forces is None
            or b.forces is None
            or not np.array_equal(a.numbers, b.numbers)
        ):
            continue
        dx = (np.asarray(b.positions) - np.asarray(a.positions)).ravel()
        step = float(np.sqrt(np.mean(dx**2)))
        if step == 0.0 or step > max_step:
            continue
        fa, fb = np.asarray(a.forces).ravel(), np.asarray(b.forces).ravel()
        work = -0.5 * float(np.dot(fa + fb, dx))
        if a.energy is not None and b.energy is not None:
            de = float(b.energy) - float(a.energy)
            if abs(work) > 1e-12 and abs(de) > 1e-12:
                votes.append(float(np.sign(de * work)))
        if a.hessian is not None and b.hessian is not None:
            pred = -0.5 * (np.asarray(a.hessian) + np.asarray(b.hessian)) @ dx
            df = fb - fa
            norm = np.linalg.norm(pred) * np.linalg.norm(df)
            if norm > 1e-12:
                votes.append(float(np.dot(df, pred) / norm))
    return (float(np.mean(votes)) if votes else 0.0), len(votes)


def decide_force_sign(
    record_groups: Iterable[Sequence[HessianRecord]],
    forces_sign: str,
    name: str,
    max_votes: int = 200,
) -> Tuple[float, str]:
    """The sign that turns a source's stored "forces" into −dE/dR, and why.

    Args:
        record_groups: records of one molecule each (neighbouring conformers such as
            IRC points or optimisation steps, in order), read as stored (sign 1).
        forces_sign: ``"forces"`` or ``"gradient"`` (declared by the user), or
            ``"auto"``: decided by :func:`force_sign_score` on the groups until
            ``max_votes`` pairs voted.
        name: the inputs, for the message.

    Returns:
        ``(sign, convention)``: ``1.0`` or ``-1.0`` and the sentence stored as
        metadata ``forces_convention``.

    Raises:
        ConversionError: the evidence is ambiguous.
    """
    if forces_sign == "forces":
        return 1.0, "forces (-dE/dR), declared"
    if forces_sign == "gradient":
        return -1.0, "gradient (dE/dR) in source, negated; declared"
    scores, votes = [], 0
    groups = iter(record_groups)
    try:
        for recs in groups:
            if votes >= max_votes:
                break
            score, n = force_sign_score(recs)
            if n:
                scores.append(score * n)
                votes += n
    finally:
        close = getattr(groups, "close", None)
        if close is not None:
            close()
    if votes == 0:
        log.warning(
            "no neighbouring conformers to check the force sign; assuming the stored "
            "'forces' are -dE/dR"
        )
        return 1.0, "forces (-dE/dR), assumed (no neighbouring conformers to check)"
    score = sum(scores) / votes
    if score > 0.5:
        return (
            1.0,
            f"forces (-dE/dR), checked on {votes} conformer pairs (score {score:.2f})",
        )
    if score < -0.5:
        log.warning("the stored 'forces' are gradients dE/dR; they are negated")
        return -1.0, (
            f"gradient (dE/dR) in source, negated; detected on {votes} conformer pairs "
            f"(score {score:.2f})"
        )
    raise ConversionError(
        f"{name}: the force sign is ambiguous (score {score:.2f} on {votes} pairs); "
        "declare it with --forces-sign forces|gradient"
    )
