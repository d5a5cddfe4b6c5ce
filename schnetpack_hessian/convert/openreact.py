"""OpenREACT-CHON-EFH: the study's HDF5 files (``molecules-RTP.h5``, ``-IRC.h5``, ``-NMS.h5``).

Layout (pyanitools/ANI style): nested groups; every group that holds ``coordinates`` is
one molecule/reaction with ``M`` conformers of ``N`` atoms:

==============  ================  =======================================
dataset         shape             unit
==============  ================  =======================================
``species``     (N,) or (M, N)    element symbols (bytes/str) or numbers
``coordinates`` (M, N, 3)         Å
``energies``    (M,)              Hartree
``forces``      (M, N, 3)         Hartree/Å
``hessian``     (M, 3N, 3N)       Hartree/Å² (also accepted flat (M, 9N²))
``iform`` etc.  any               ignored
==============  ================  =======================================

Padding: molecules smaller than the array width are padded with empty / ``X`` / 0
species and/or NaN coordinates; padded atoms are dropped (with their Hessian rows and
columns).

Labels: each file is one subset (``RTP`` → critical points, ``IRC`` → ``irc``, ``NMS``
→ ``nms``), taken from, in this order: the file's root attribute ``subset`` (content;
an option that contradicts it is an error), the ``subset`` option (``--subset``), or the
file name, where ``RTP``, ``IRC`` or ``NMS`` must be a whole token of the name as in the
official ``molecules-RTP.h5`` (``birch-RTP.h5`` is RTP; the letters ``IRC`` inside
``BIRCH`` are no token).  With ``kind`` (``--kind``) every structure gets that label and
no subset is needed; otherwise a file none of these name is an error.  Critical points take their ``kind`` from a group-path component
(``reactant``/``r``, ``product``/``p``, ``ts``/``t``) if there is one, else from the
Hessian: one negative eigenvalue → ``ts``; none → ``reactant`` for the first minimum of
a group, ``product`` for later ones; without a Hessian → ``other``.  ``reaction`` is
the index of the group path in the sorted list of all group paths of all inputs (the same
path in the three files is the same reaction); the list is stored as metadata
``reactions``.

Force sign: the files call the array ``forces``; we take it as −dE/dR unless the data
say otherwise.  With ``forces_sign="auto"`` (default) neighbouring conformers (IRC paths,
normal-mode displacements) are checked with :func:`~.base.force_sign_score`
(energy differences and Hessians against the stored vectors); if they are gradients
(dE/dR) they are negated.  The decision is stored as metadata ``forces_convention``.
"""

import logging
import re
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import h5py
import numpy as np

from schnetpack_hessian.layout import as_square
from schnetpack_hessian.convert.base import (
    FORCES_SIGN,
    ConversionError,
    Entry,
    Option,
    PathLike,
    Reader,
    decide_force_sign,
    is_hdf5,
    numbers_from_symbols,
    open_hdf5,
)
from schnetpack_hessian.data.h5file import FORMAT_NAME
from schnetpack_hessian.data.record import HessianRecord

__all__ = ["UNITS", "READER", "OpenReactReader", "subset_of"]

log = logging.getLogger(__name__)

#: Units of the OpenREACT-CHON-EFH files.
UNITS = {
    "distance": "Ang",
    "energy": "Hartree",
    "forces": "Hartree/Ang",
    "hessian": "Hartree/Ang/Ang",
}
METADATA = {
    "source": "OpenREACT-CHON-EFH",
    "level_of_theory": "wB97X-D/6-31G(d)",
}
_SUBSETS = {"RTP": None, "IRC": "irc", "NMS": "nms"}
_KIND_TOKENS = {
    "reactant": "reactant",
    "reactants": "reactant",
    "r": "reactant",
    "product": "product",
    "products": "product",
    "p": "product",
    "ts": "ts",
    "t": "ts",
    "transition_state": "ts",
}
_PAD_SPECIES = {"", "X", "0"}


def subset_of(
    path: PathLike, kind: Optional[str] = None, subset: Optional[str] = None
) -> Optional[str]:
    """The subset of an OpenREACT file: ``None`` for critical points (RTP), ``"irc"``
    or ``"nms"``.

    Read from the file's root attribute ``subset``, else the ``subset`` option, else
    a whole token ``RTP``/``IRC``/``NMS`` of the file name (``molecules-IRC.h5``);
    never from a substring of the name.

    Args:
        path: the HDF5 file.
        kind: the ``kind`` option (labels every structure; then an unknown subset is
            no error).
        subset: the ``subset`` option (``"RTP"``, ``"IRC"``, ``"NMS"``; ``None`` or
            ``"auto"``: not given).

    Raises:
        ConversionError: the attribute and the option differ, the attribute is not
            a subset name, the name holds two subset tokens, or nothing tells the
            subset and no ``kind`` is given.
    """
    subset = None if subset in (None, "auto") else str(subset).upper()
    with open_hdf5(path) as f:
        stored = f.attrs.get("subset")
    if stored is not None:
        stored = (stored.decode() if isinstance(stored, bytes) else str(stored)).upper()
        if stored not in _SUBSETS:
            raise ConversionError(
                f"{path}: root attribute subset={stored!r} is not one of "
                f"{list(_SUBSETS)}"
            )
        if subset is not None and subset != stored:
            raise ConversionError(
                f"{path}: the file says subset {stored}, the option says {subset}"
            )
        return _SUBSETS[stored]
    if subset is not None:
        return _SUBSETS[subset]
    tokens = set(re.split(r"[^A-Z0-9]+", Path(path).name.upper())) & set(_SUBSETS)
    if len(tokens) > 1:
        raise ConversionError(
            f"{path}: the file name holds the subsets {sorted(tokens)}; pass --subset "
            "RTP|IRC|NMS"
        )
    if tokens:
        return _SUBSETS[tokens.pop()]
    if kind is None:
        raise ConversionError(
            f"{path}: cannot tell whether it holds critical points (RTP), IRC or NMS "
            "structures: it has no root attribute 'subset' and RTP, IRC or NMS is no "
            "whole token of its name (e.g. molecules-IRC.h5); pass --subset RTP|IRC|NMS "
            "or --kind"
        )
    return kind


def _data_groups(f: h5py.Group, prefix: str = "") -> Iterator[Tuple[str, h5py.Group]]:
    for name in sorted(f.keys()):
        item = f[name]
        if isinstance(item, h5py.Group):
            path = f"{prefix}/{name}"
            if "coordinates" in item:
                yield path, item
            else:
                yield from _data_groups(item, path)


def _atom_mask(species: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """``(M, N)`` bool: real (not padded) atoms."""
    if species.dtype.kind in "SUO":
        text = np.vectorize(
            lambda s: (s.decode() if isinstance(s, bytes) else str(s)).strip()
        )(species)
        valid = ~np.isin(text, list(_PAD_SPECIES))
    else:
        valid = species > 0
    valid = np.broadcast_to(valid, coords.shape[:2])
    return valid & ~np.isnan(coords).any(axis=-1)


def _kind_from_path(path: str) -> Optional[str]:
    for part in reversed(path.strip("/").split("/")):
        kind = _KIND_TOKENS.get(part.lower())
        if kind:
            return kind
    return None


def _critical_kind(hessian: Optional[np.ndarray], seen_minimum: bool) -> str:
    if hessian is None:
        return "other"
    eig = np.linalg.eigvalsh(0.5 * (hessian + hessian.T))
    n_negative = int(np.sum(eig < -1e-3 * np.max(np.abs(eig))))
    if n_negative == 1:
        return "ts"
    if n_negative == 0:
        return "product" if seen_minimum else "reactant"
    return "other"


def _group_records(
    path: str,
    group: h5py.Group,
    subset: Optional[str],
    reaction: int,
    sign: float,
    kind: Optional[str],
) -> List[HessianRecord]:
    coords = np.asarray(group["coordinates"][()], dtype=np.float64)
    if coords.ndim != 3 or coords.shape[-1] != 3:
        raise ConversionError(
            f"{path}: coordinates have shape {coords.shape}, expected (M, N, 3)"
        )
    m, width = coords.shape[:2]
    species = np.asarray(group["species"][()])
    if species.shape not in ((width,), (m, width)):
        raise ConversionError(
            f"{path}: species shape {species.shape} does not match coordinates "
            f"{coords.shape}"
        )
    mask = _atom_mask(species, coords)
    energies = np.asarray(group["energies"][()], dtype=np.float64).reshape(-1)
    if energies.shape != (m,):
        raise ConversionError(
            f"{path}: {energies.shape[0]} energies for {m} conformers"
        )
    forces = group["forces"][()] if "forces" in group else None
    hessians = group["hessian"] if "hessian" in group else None
    records = []
    seen_minimum = False
    for c in range(m):
        atoms = np.flatnonzero(mask[c])
        sp = species if species.ndim == 1 else species[c]
        numbers = numbers_from_symbols(sp[atoms])
        n = len(atoms)
        f_c = None
        if forces is not None:
            if forces.shape[:2] != (m, width):
                raise ConversionError(
                    f"{path}: forces shape {forces.shape} does not match coordinates "
                    f"{coords.shape}"
                )
            f_c = sign * np.asarray(forces[c], dtype=np.float64)[atoms]
        h_c = None
        if hessians is not None:
            h = np.asarray(hessians[c], dtype=np.float64)
            if h.shape == (9 * width * width,):
                h = as_square(h, width)
            if h.shape != (3 * width, 3 * width):
                raise ConversionError(
                    f"{path}, conformer {c}: Hessian shape {h.shape}, expected "
                    f"{(3 * width, 3 * width)}"
                )
            idx = (3 * atoms[:, None] + np.arange(3)).ravel()
            h_c = h[np.ix_(idx, idx)]
            if np.isnan(h_c).all():
                h_c = None
        label = kind or subset or _kind_from_path(path)
        if label is None:
            label = _critical_kind(h_c, seen_minimum)
            seen_minimum |= label in ("reactant", "product")
        records.append(
            HessianRecord(
                numbers=numbers,
                positions=coords[c][atoms],
                energy=float(energies[c]),
                forces=f_c if f_c is not None else np.full((n, 3), np.nan),
                hessian=h_c,
                kind=label,
                reaction=reaction,
            )
        )
    return records


def _decide_sign(paths: Sequence[PathLike], forces_sign: str) -> Tuple[float, str]:
    def groups():
        for p in paths:
            with open_hdf5(p) as f:
                for i, (path, group) in enumerate(_data_groups(f)):
                    if i >= 50:
                        break
                    yield _group_records(path, group, "other", 0, 1.0, "other")

    return decide_force_sign(groups(), forces_sign, ", ".join(map(str, paths)))


class OpenReactReader(Reader):
    """OpenREACT-CHON-EFH files (RTP, IRC, NMS) as one data set, Hartree / Å.

    ``reaction`` ids index the sorted union of group paths of all inputs (metadata
    ``reactions``); the force convention is checked once over all inputs.
    """

    name = "openreact"
    units = UNITS
    metadata = METADATA
    shared_reactions = True
    options = {
        "subset": Option(
            "auto",
            "which OpenREACT subset every input is (auto: the file's 'subset' "
            "attribute, else RTP/IRC/NMS as a whole token of its name)",
            ("auto", "RTP", "IRC", "NMS"),
        ),
        "forces_sign": FORCES_SIGN,
    }

    def detect(self, path: Path) -> bool:
        """True for an HDF5 file with pyanitools-style groups (not our training
        files); a damaged HDF5 file is an error, not an unknown format."""
        if not is_hdf5(path):
            return False
        with open_hdf5(path) as f:
            if f.attrs.get("format") == FORMAT_NAME:
                return False
            return next(_data_groups(f), None) is not None

    def count(self, path: Path) -> Optional[int]:
        with open_hdf5(path) as f:
            return sum(int(g["coordinates"].shape[0]) for _, g in _data_groups(f))

    def prepare(self, files: Sequence[Path], options: Dict[str, Any]) -> Dict[str, Any]:
        kind = options.get("kind")
        subsets = {str(p): subset_of(p, kind, options["subset"]) for p in files}
        names = set()
        for p in files:
            with open_hdf5(p) as f:
                for path, group in _data_groups(f):
                    names.add(path)
                    if "hessian" not in group:
                        log.warning(
                            "%s:%s has no hessian dataset; its %d conformers are "
                            "stored without Hessian",
                            p,
                            path,
                            group["coordinates"].shape[0],
                        )
        sign, convention = _decide_sign(files, options["forces_sign"])
        return {
            "subsets": subsets,
            "reactions": {name: i for i, name in enumerate(sorted(names))},
            "sign": sign,
            "metadata": {
                "forces_convention": convention,
                "reactions": sorted(names),
                "inputs": [p.name for p in files],
            },
        }

    def entries(
        self, path: Path, options: Dict[str, Any], prepared: Dict[str, Any]
    ) -> Iterator[Entry]:
        with open_hdf5(path) as f:
            for name, group in _data_groups(f):
                cache: Dict[str, List[HessianRecord]] = {}

                def load(c: int, name=name, group=group, cache=cache) -> HessianRecord:
                    if "records" not in cache:
                        cache["records"] = _group_records(
                            name,
                            group,
                            prepared["subsets"][str(path)],
                            prepared["reactions"][name],
                            prepared["sign"],
                            options.get("kind"),
                        )
                    return cache["records"][c]

                for c in range(int(group["coordinates"].shape[0])):
                    yield f"{name} conformer {c}", lambda c=c, load=load: load(c)


READER = OpenReactReader()
