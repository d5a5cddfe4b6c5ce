"""Converters from the Hessian data formats met in the field to training files.

One module per format, each with ``detect(path)`` and ``read(paths, **options)``
returning a :class:`~.base.Source` (records in the units the format declares);
:mod:`.deepmd` and :mod:`.extxyz` also ``write``.  :func:`convert` ties a reader to
the training-file writer (or an external writer) with streaming, validation and
atomic output; ``spkhess-convert`` is a thin wrapper around it.
"""

from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Sequence

from tqdm import tqdm

from schnetpack_hessian.convert import (
    deepmd,
    extxyz,
    horm,
    openreact,
    orca,
    spkdb,
    training,
)
from schnetpack_hessian.convert.base import ConversionError, PathLike, Source
from schnetpack_hessian.data.io import H5_SUFFIXES, DB_SUFFIXES, RecordWriter
from schnetpack_hessian.data.record import HessianRecord, validate_record
from schnetpack_hessian.data.validation import SYMMETRY_RTOL, SymmetryReport

__all__ = [
    "ConversionError",
    "Source",
    "READERS",
    "WRITERS",
    "guess_format",
    "open_source",
    "convert",
    "check",
]

#: Input formats, in the order :func:`guess_format` tries them.
READERS: Dict[str, Any] = {
    "training": training,
    "openreact": openreact,
    "horm": horm,
    "deepmd": deepmd,
    "orca": orca,
    "extxyz": extxyz,
    "spkdb": spkdb,
}
#: Output formats besides training files (``.db`` / ``.h5``).
WRITERS: Dict[str, Callable[..., int]] = {
    "deepmd": deepmd.write,
    "extxyz": extxyz.write,
}


def guess_format(paths: Sequence[PathLike]) -> str:
    """Input format from the first path (contents for ``.h5``, else suffix/layout).

    Raises:
        ConversionError: no reader recognises it.
    """
    first = Path(paths[0])
    if not first.exists():
        raise ConversionError(f"{first}: no such file or folder")
    for name, module in READERS.items():
        if module.detect(first):
            return name
    raise ConversionError(
        f"{first}: cannot tell the format; pass --format ({', '.join(READERS)})"
    )


def open_source(
    paths: Sequence[PathLike], fmt: Optional[str] = None, **options: Any
) -> Source:
    """Reader for ``paths`` (format guessed if ``fmt`` is None).

    Options go to the reader: ``energy_unit``, ``distance_unit``, ``kind``,
    ``energy_key`` (HORM: ``energy``/``ae``), ``forces_sign`` (OpenREACT), ...
    """
    if not paths:
        raise ConversionError("no input given")
    fmt = fmt or guess_format(paths)
    if fmt not in READERS:
        raise ConversionError(f"unknown format {fmt!r}; choose from {list(READERS)}")
    return READERS[fmt].read(list(paths), **options)


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
        **options: reader options (see :func:`open_source`).

    Returns:
        Symmetry report (structures, Hessians, worst asymmetry and where).
    """
    source = open_source(inputs, fmt, **options)
    md = dict(source.metadata)
    md.update(metadata or {})
    kind = output_format(output, out_format)
    if kind == "training":
        with RecordWriter(
            output, source.units, md, overwrite, precision, symmetrize, rtol
        ) as w:
            for rec in _progress(source, progress):
                w.add(rec)
        return w.report
    report = SymmetryReport()

    def checked() -> Iterator[HessianRecord]:
        for i, rec in enumerate(_progress(source, progress)):
            rec, asym = validate_record(
                rec, source.name, i, rtol=rtol, symmetrize=symmetrize
            )
            report.update(i, rec.hessian is not None, asym)
            yield rec

    WRITERS[kind](output, checked(), source.units, overwrite=overwrite)
    return report


def check(
    inputs: Sequence[PathLike],
    fmt: Optional[str] = None,
    rtol: float = SYMMETRY_RTOL,
    progress: bool = False,
    **options: Any,
) -> Dict[str, Any]:
    """Validate inputs without writing anything.

    Returns:
        ``{"format", "structures", "hessians", "worst_asymmetry", "worst_index",
        "units"}``.

    Raises:
        HessianDataError: the first bad structure (file, index, problem).
    """
    fmt = fmt or guess_format(inputs)
    source = open_source(inputs, fmt, **options)
    report = SymmetryReport()
    for i, rec in enumerate(_progress(source, progress)):
        rec, asym = validate_record(rec, source.name, i, rtol=rtol)
        report.update(i, rec.hessian is not None, asym)
    return {
        "format": fmt,
        "structures": report.n_structures,
        "hessians": report.n_hessians,
        "worst_asymmetry": report.worst_asymmetry,
        "worst_index": report.worst_index,
        "units": source.units,
        "metadata": {
            k: (f"<{len(v)} entries>" if isinstance(v, list) and len(v) > 20 else v)
            for k, v in source.metadata.items()
        },
    }
