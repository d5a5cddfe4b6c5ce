"""Converters from the Hessian data formats met in the field to training files.

One module per format, each with a :class:`~.base.Reader` (``READER``: name,
detection, options, units, one entry per structure); :mod:`.deepmd` and
:mod:`.extxyz` also ``write``.  The driver here does what every format shares:
:func:`open_source` checks options and units, applies ``kind`` overrides, counts and
locates every record (``"<input>: structure <k> (<group>)"``, parser failures
included); :func:`convert` and :func:`check` add validation and the physics checks
(:class:`~schnetpack_hessian.data.physics.PhysicsCheck`) and write atomically.
``spkhess-convert`` is a thin wrapper around them.
"""

import logging
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

from tqdm import tqdm

from schnetpack_hessian import properties as P
from schnetpack_hessian.convert import (
    deepmd,
    extxyz,
    hessian_qm9,
    horm,
    openreact,
    orca,
    spkdb,
    themol,
    training,
)
from schnetpack_hessian.convert.base import (
    COMMON_OPTIONS,
    ConversionError,
    PathLike,
    Reader,
    Source,
)
from schnetpack_hessian.data.io import H5_SUFFIXES, DB_SUFFIXES, RecordWriter
from schnetpack_hessian.data.physics import PhysicsCheck, PhysicsReport
from schnetpack_hessian.data.record import (
    Duplicates,
    HessianRecord,
    InputReactions,
    Origin,
    ReactionIds,
    validate_record,
)
from schnetpack_hessian.data.units import check_dimension, complete_units
from schnetpack_hessian.data.validation import (
    SYMMETRY_RTOL,
    HessianDataError,
    SymmetryReport,
)

__all__ = [
    "ConversionError",
    "PhysicsCheck",
    "Reader",
    "Source",
    "READERS",
    "WRITERS",
    "guess_format",
    "open_source",
    "convert",
    "check",
]

log = logging.getLogger(__name__)

#: Input formats, in the order :func:`guess_format` tries them.
READERS: Dict[str, Reader] = {
    r.name: r
    for r in (
        training.READER,
        themol.READER,
        openreact.READER,
        horm.READER,
        hessian_qm9.READER,
        deepmd.READER,
        orca.READER,
        extxyz.READER,
        spkdb.READER,
    )
}
#: Output formats besides training files (``.db`` / ``.h5``).
WRITERS: Dict[str, Callable[..., int]] = {
    "deepmd": deepmd.write,
    "extxyz": extxyz.write,
}


def guess_format(paths: Sequence[PathLike]) -> str:
    """Input format from the first path (contents for ``.h5``, else suffix/layout).

    Raises:
        ConversionError: no reader recognises it (or an HDF5 file is damaged).
    """
    first = Path(paths[0])
    if not first.exists():
        raise ConversionError(f"{first}: no such file or folder")
    for name, reader in READERS.items():
        if reader.detect(first):
            return name
    raise ConversionError(
        f"{first}: cannot tell the format; pass --format ({', '.join(READERS)})"
    )


def _foreign(err: Exception, reader: Reader) -> str:
    """The problem an exception describes (parser failures say what failed)."""
    if isinstance(err, HessianDataError):
        return str(err)
    return f"cannot read it as {reader.name}: {type(err).__name__}: {err}"


def _file_step(reader: Reader, where: str, step: Callable[[], Any]) -> Any:
    """Run a file-level reader step; foreign exceptions become ConversionError."""
    try:
        return step()
    except HessianDataError:
        raise
    except Exception as err:
        raise ConversionError(f"{where}: {_foreign(err, reader)}") from err


def _options(reader: Reader, options: Dict[str, Any]) -> Dict[str, Any]:
    """Defaults plus the given options; unknown ones and bad choices are errors."""
    taken = set(COMMON_OPTIONS) | set(reader.options)
    unknown = sorted(set(options) - taken)
    if unknown:
        raise ConversionError(
            f"format {reader.name} takes no option {', '.join(map(repr, unknown))}; it "
            f"takes {', '.join(sorted(taken))}"
        )
    out = {k: o.default for k, o in reader.options.items()}
    out.update(options)
    for name, opt in reader.options.items():
        if opt.choices is not None and out[name] not in opt.choices:
            raise ConversionError(
                f"format {reader.name}: {name} must be one of {list(opt.choices)}, not "
                f"{out[name]!r}"
            )
    kind = out.get("kind")
    if kind is not None and kind not in P.KINDS:
        raise ConversionError(f"unknown kind {kind!r}, expected one of {P.KINDS}")
    return out


def _units(reader: Reader, path: Path, options: Dict[str, Any]) -> Dict[str, str]:
    """Units of one input file: fixed by the format, declared in the file or by the
    user (never guessed); a user option may only confirm a stated unit."""
    stated = {k: (v, None) for k, v in (reader.units or {}).items()}
    in_file = _file_step(reader, str(path), lambda: reader.file_units(path, options))
    for name, value in in_file.items():
        if value:
            check_dimension(value, name, f"{path}: the file declares")
            stated[name] = (value, "file")
    for name in ("energy", "distance"):
        given = options.get(f"{name}_unit")
        if given is None:
            continue
        given = check_dimension(
            given, name, f"{path}: option {name}_unit (--{name}-unit)"
        )
        if name not in stated:
            continue
        value, by = stated[name]
        if given == check_dimension(value, name):
            continue
        if by == "file":
            raise ConversionError(
                f"{path}: file declares {name} in {value}, option says {given}"
            )
        raise ConversionError(
            f"{path}: {reader.name} files store {name} in {value}, but {given!r} was "
            "declared; drop the option (the stored units are declared in the output "
            "and converted when loading, e.g. HessianDataModule(property_units=...))"
        )
    declared = {k: v for k, (v, _) in stated.items()}
    for name in ("energy", "distance"):
        declared.setdefault(name, options.get(f"{name}_unit"))
    if declared["energy"] is None or declared["distance"] is None:
        raise ConversionError(
            f"{path}: {reader.name} files do not fix their units: declare them with "
            "--energy-unit and --distance-unit (e.g. --energy-unit eV --distance-unit "
            "Ang); units are never guessed"
        )
    return complete_units(declared)


def _input_reactions(
    reader: Reader, inputs: Dict[Path, List[Path]]
) -> "tuple[Optional[InputReactions], Dict[Path, Optional[int]]]":
    """Offsets that make the reaction ids of several inputs unique.

    Args:
        reader: the format.
        inputs: each input (as given) → its files (a deepmd or HORM folder holds
            several; they share the input's ids).

    Returns:
        ``(reactions, offsets)``: ``None`` and ``{}`` for one input or a format whose
        inputs share their ids; else the offset of each input (``None``: its ids are
        known only while reading, the offset is taken then).
    """
    if reader.shared_reactions or len(inputs) < 2:
        return None, {}
    reactions = InputReactions()
    offsets: Dict[Path, Optional[int]] = {}
    for given, files in inputs.items():
        tables = [
            _file_step(reader, str(f), lambda f=f: reader.reactions(f)) for f in files
        ]
        if any(t is None for t in tables):
            offsets[given] = None
            continue
        ids = [i for t in tables for i in t[0]]
        names = {i: n for t in tables for i, n in t[1].items()}
        offsets[given] = reactions.add(str(given), ids, names)
    return reactions, offsets


def _records(
    reader: Reader,
    inputs: Dict[Path, List[Path]],
    options: Dict[str, Any],
    prepared: Dict[str, Any],
    reactions: Optional[InputReactions] = None,
    offsets: Optional[Dict[Path, Optional[int]]] = None,
) -> Iterator[HessianRecord]:
    """Every structure with its :class:`Origin` and reaction ids unique over the
    inputs (``reactions``/``offsets`` from :func:`_input_reactions`); parser
    failures located."""
    kind = options.get("kind")
    for given, path in ((g, f) for g, files in inputs.items() for f in files):
        offset, lazy = None, False
        if reactions is not None:
            offset = offsets.get(given)
            if offset is None:  # ids known only now: shifted past all ids so far
                offset = offsets[given] = reactions.add(str(given))
                lazy = True
        entries = reader.entries(path, options, prepared)
        index = 0
        while True:
            try:
                label, load = next(entries)
            except StopIteration:
                break
            except Exception as err:
                origin = Origin(str(path), index)
                raise ConversionError(f"{origin}: {_foreign(err, reader)}") from err
            origin = Origin(str(path), index, label)
            try:
                record = load()
            except Exception as err:
                raise ConversionError(f"{origin}: {_foreign(err, reader)}") from err
            record.origin = origin
            if kind is not None:
                record.kind = kind
            if offset is not None:
                try:
                    shifted = reactions.shift(record.reaction, offset)
                except HessianDataError as err:
                    raise ConversionError(f"{origin}: {err}") from err
                if lazy and offset and shifted != record.reaction:
                    log.warning(
                        "%s: reaction ids shifted by %d to keep them apart from the "
                        "earlier inputs'",
                        path,
                        offset,
                    )
                    lazy = False
                record.reaction = shifted
            yield record
            index += 1


def open_source(
    paths: Sequence[PathLike], fmt: Optional[str] = None, **options: Any
) -> Source:
    """Records of ``paths`` in one format (guessed if ``fmt`` is None).

    Options: ``energy_unit``, ``distance_unit``, ``kind`` (every format) and those
    the format declares (``READERS[fmt].options``: e.g. ``energy_key`` for HORM,
    ``forces_sign`` for OpenREACT); an option the format does not take is an error.

    Raises:
        ConversionError: unknown format or option, units that are undeclared or
            differ between inputs, unreadable files.
    """
    if not paths:
        raise ConversionError("no input given")
    fmt = fmt or guess_format(paths)
    if fmt not in READERS:
        raise ConversionError(f"unknown format {fmt!r}; choose from {list(READERS)}")
    reader = READERS[fmt]
    options = _options(reader, dict(options))
    inputs: Dict[Path, List[Path]] = {}
    for p in map(Path, paths):
        if not p.exists():
            raise ConversionError(f"{p}: no such file or folder")
        found = _file_step(reader, str(p), lambda p=p: reader.files(p))
        inputs.setdefault(p, []).extend(found)
    files = [f for found in inputs.values() for f in found]
    units = None
    for f in files:
        u = _units(reader, f, options)
        if units is not None and u != units:
            raise ConversionError(
                f"{f}: units {u} differ from the other inputs' {units}"
            )
        units = u
    counts = [_file_step(reader, str(f), lambda f=f: reader.count(f)) for f in files]
    total = None if None in counts else sum(counts)
    name = ", ".join(map(str, paths))
    prepared = _file_step(reader, name, lambda: reader.prepare(files, options))
    metadata = dict(reader.metadata)
    metadata.update(prepared.get("metadata", {}))
    reactions, offsets = _input_reactions(reader, inputs)
    if reactions is not None:
        metadata.update(reactions.metadata())
        metadata.setdefault("inputs", [str(p) for p in inputs])
        for f, offset in reactions.shifted:
            log.warning(
                "%s: reaction ids shifted by %d, they collide with an earlier input's",
                f,
                offset,
            )
    records = _records(reader, inputs, options, prepared, reactions, offsets)
    return Source(records, units, metadata, total, name, fmt)


def output_format(path: PathLike, fmt: Optional[str] = None) -> str:
    """``training``, ``extxyz`` or ``deepmd`` for an output path.

    Raises:
        ConversionError: unknown suffix and no explicit format.
    """
    if fmt:
        if fmt not in WRITERS and fmt != "training":
            raise ConversionError(
                f"unknown output format {fmt!r}; choose from training, {', '.join(WRITERS)}"
            )
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix in H5_SUFFIXES + DB_SUFFIXES:
        return "training"
    if suffix in extxyz.SUFFIXES:
        return "extxyz"
    raise ConversionError(
        f"{path}: cannot tell the output format from the suffix; use .h5/.db (training "
        "file), .xyz/.extxyz, or --output-format deepmd for a deepmd-kit folder"
    )


def _progress(source: Source, show: bool) -> Iterator[HessianRecord]:
    return iter(
        tqdm(
            source.records,
            total=source.total,
            desc="converting",
            unit="structure",
            disable=not show,
        )
    )


def _validated(
    source: Source,
    rtol: float,
    symmetrize: bool,
    physics: PhysicsCheck,
    report: SymmetryReport,
    progress: bool,
) -> Iterator[HessianRecord]:
    """Validate and physics-check every record (messages name its origin); count
    structures given twice (``report.duplicates``, a warning at the end).

    Raises:
        HessianDataError: a bad record, or no record at all (raised when the stream
            ends, so that a writer consuming it leaves no output).
    """
    duplicates = Duplicates()
    for i, rec in enumerate(_progress(source, progress)):
        rec, asym = validate_record(
            rec, rtol=rtol, symmetrize=symmetrize, units=source.units
        )
        physics(rec, source.units, report.physics)
        report.update(i, rec.hessian is not None, asym, str(rec.origin))
        duplicates(rec.numbers, rec.positions, str(rec.origin))
        yield rec
    if report.n_structures == 0:
        raise HessianDataError(f"{source.name}: holds no structures")
    report.duplicates = duplicates.count
    message = duplicates.message(source.name)
    if message:
        log.warning(message)


def _check_rtol(rtol: float):
    if not (isinstance(rtol, (int, float)) and 0.0 < rtol < 1.0):
        raise ConversionError(
            f"the symmetry tolerance must be a number in (0, 1), not {rtol!r} (default "
            f"{SYMMETRY_RTOL:g}: max|H - H^T| / max|H|)"
        )


def convert(
    inputs: Sequence[PathLike],
    output: PathLike,
    fmt: Optional[str] = None,
    out_format: Optional[str] = None,
    overwrite: bool = False,
    symmetrize: bool = False,
    rtol: float = SYMMETRY_RTOL,
    precision: str = "float64",
    metadata: Optional[Dict[str, Any]] = None,
    progress: bool = False,
    physics: Optional[PhysicsCheck] = None,
    mkdir: bool = False,
    **options: Any,
) -> SymmetryReport:
    """Convert ``inputs`` to ``output`` (streamed, validated, written atomically).

    Args:
        inputs: input files/folders of one format.
        output: ``.h5`` / ``.db`` training file, ``.xyz``, or a deepmd folder.
        fmt: input format (guessed if None).
        out_format: output format (from the suffix if None).
        overwrite: replace an existing output.
        symmetrize: store ``(H + Hᵀ)/2``.
        rtol: symmetry tolerance.
        precision: ``float32`` stores forces/Hessians of ``.h5`` files in single
            precision (lossless for float32 sources such as HORM).
        metadata: extra metadata for training files.
        progress: show a progress bar.
        physics: sum-rule and magnitude checks (default: on, errors).
        mkdir: create a missing output directory (else an error).
        **options: reader options (see :func:`open_source`).

    Returns:
        Report (structures, Hessians, worst asymmetry and where; ``physics``: worst
        sum-rule residuals and where).

    Raises:
        HessianDataError: the first bad structure, named by input file, index within
            it and group/frame (nothing is written then).
    """
    _check_rtol(rtol)
    physics = physics or PhysicsCheck()
    kind = output_format(output, out_format)
    source = open_source(inputs, fmt, **options)
    md = dict(source.metadata)
    md.update(metadata or {})
    report = SymmetryReport(physics=PhysicsReport())
    records = _validated(source, rtol, symmetrize, physics, report, progress)
    if kind == "training":
        with RecordWriter(
            output, source.units, md, overwrite, precision, mkdir=mkdir
        ) as w:
            for rec in records:
                w.add(rec)
        return report
    reactions = ReactionIds(md)  # names given by the source or its metadata

    def labelled() -> Iterator[HessianRecord]:
        for rec in records:
            rec.reaction = reactions(rec.reaction, rec.origin)
            yield rec

    names = {"reaction_names": reactions.names} if kind == "extxyz" else {}
    WRITERS[kind](
        output, labelled(), source.units, overwrite=overwrite, mkdir=mkdir, **names
    )
    return report


def check(
    inputs: Sequence[PathLike],
    fmt: Optional[str] = None,
    rtol: float = SYMMETRY_RTOL,
    progress: bool = False,
    physics: Optional[PhysicsCheck] = None,
    **options: Any,
) -> Dict[str, Any]:
    """Validate inputs without writing anything (the same checks as :func:`convert`).

    Returns:
        ``{"format", "structures", "hessians", "worst_asymmetry", "worst_index",
        "units", "metadata", "physics"}``.

    Raises:
        HessianDataError: the first bad structure (file, index, problem).
    """
    _check_rtol(rtol)
    source = open_source(inputs, fmt, **options)
    report = SymmetryReport(physics=PhysicsReport())
    for _ in _validated(
        source, rtol, False, physics or PhysicsCheck(), report, progress
    ):
        pass
    summary = report.as_dict()
    physics = summary.pop("physics")
    return {
        "format": source.format,
        **summary,
        "units": source.units,
        "metadata": {
            k: (
                f"<{len(v)} entries>"
                if isinstance(v, (list, dict)) and len(v) > 20
                else v
            )
            for k, v in source.metadata.items()
        },
        "physics": physics,
    }
