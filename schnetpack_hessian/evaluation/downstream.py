"""One model on one data set: every downstream number ``spkhess-eval`` reports.

:func:`evaluate_downstream` predicts all structures in batches (exact Hessians),
compares them structure by structure, pools per kind and per reaction, computes
barriers and IRC profiles, and runs the TS searches.  Everything is in ASE units
(eV, Å), physical numbers as :class:`~schnetpack_hessian.quantities.Quantity` that
know their dimension; :mod:`.report` converts them to the study's kcal/mol units when
writing.
"""

import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Union

from ase import Atoms
from tqdm import tqdm

from schnetpack_hessian.data.record import HessianRecord
from schnetpack_hessian.evaluation.data import as_records
from schnetpack_hessian.evaluation.model import EvaluationError, EvaluationModel
from schnetpack_hessian.evaluation.predict import Prediction, predict
from schnetpack_hessian.evaluation.reactions import (
    IRCProfile,
    barrier_rows,
    barrier_stats,
    irc_profile,
    profile_stats,
    reaction_paths,
)
from schnetpack_hessian.evaluation.spectra import IMAG_THRESHOLD, HessianComparison
from schnetpack_hessian.evaluation.structures import (
    STRUCTURE_ROW,
    Row,
    compare_structure,
    group_rows,
    pool,
    structure_row,
)
from schnetpack_hessian.evaluation.tssearch import (
    TSSearchResult,
    TSSearchSettings,
    summarize_ts_searches,
    ts_searches,
    ts_starts,
)

__all__ = ["DownstreamReport", "evaluate_downstream", "check_elements"]


@dataclass
class DownstreamReport:
    """Everything measured for one model (ASE units).

    Attributes:
        model: the model's name.
        rows: one row per structure (:func:`~.structures.structure_row`).
        pooled: ``{"all": {...}, "kind": {kind: {...}}, "reaction": {id: {...}}}``.
        barriers: one row per reaction (:func:`~.reactions.barrier_rows`).
        barrier_stats: MAE of forward/reverse barriers
            (:func:`~.reactions.barrier_stats`).
        profiles: IRC energy profiles.
        profile_stats: mean barrier error, mean max deviation, fraction with the
            maximum at the TS (:func:`~.reactions.profile_stats`).
        comparisons: spectral comparison per structure index (for plots).
        ts_results: every TS search.
        ts_summary: per method, see :func:`~.tssearch.summarize_ts_searches`.
        reaction_names: id → name.
        seconds: wall time per stage.
        has_hessians: whether the data held reference Hessians.
        structures: the reference records (ASE units; for plots).
        predictions: the model's predictions, one per structure.
    """

    model: str
    rows: List[Row]
    pooled: Dict[str, object]
    barriers: List[Dict[str, object]]
    barrier_stats: Dict[str, object]
    profiles: List[IRCProfile]
    profile_stats: Dict[str, object]
    comparisons: Dict[int, HessianComparison]
    ts_results: List[TSSearchResult] = field(default_factory=list)
    ts_summary: Dict[str, Dict[str, float]] = field(default_factory=dict)
    reaction_names: Dict[int, str] = field(default_factory=dict)
    seconds: Dict[str, float] = field(default_factory=dict)
    has_hessians: bool = True
    structures: Sequence[HessianRecord] = ()
    predictions: Sequence[Prediction] = ()


def check_elements(
    model: EvaluationModel, structures: Sequence[HessianRecord], name: str
):
    """Raise if the data holds elements the model was not trained on.

    Raises:
        EvaluationError: one line naming the model, the data and the first
            offending structure.
    """
    if model.elements is None:
        return
    from ase.data import chemical_symbols

    for i, record in enumerate(structures):
        extra = set(int(z) for z in record.numbers) - model.elements
        if extra:
            known = ", ".join(chemical_symbols[z] for z in sorted(model.elements))
            new = ", ".join(chemical_symbols[z] for z in sorted(extra))
            raise EvaluationError(
                f"{model.path}: the model was trained on {known}; {name} structure {i} "
                f"contains {new}"
            )


def evaluate_downstream(
    model: EvaluationModel,
    structures: Sequence[Union[HessianRecord, Atoms]],
    data_name: str = "data",
    reaction_names: Optional[Dict[int, str]] = None,
    ts_settings: Optional[TSSearchSettings] = TSSearchSettings(),
    batch_size: int = 16,
    imag_threshold: float = IMAG_THRESHOLD,
    progress: bool = False,
) -> DownstreamReport:
    """Evaluate ``model`` on ``structures``.

    Args:
        model: the loaded model.
        structures: reference records in ASE units (:func:`~.data.load_structures`,
            :func:`~schnetpack_hessian.data.iread_records`); ``ase.Atoms`` in
            ``iread``'s convention are turned into records once, here.
        data_name: the data's name for messages.
        reaction_names: reaction id → name.
        ts_settings: TS-search settings; None skips the searches.
        batch_size: structures per model call.
        imag_threshold: cm⁻¹ below which imaginary modes are not counted.
        progress: progress bars over structures and TS searches.
    """
    structures = as_records(structures)
    check_elements(model, structures, data_name)
    seconds: Dict[str, float] = {}
    has_hessians = any(r.hessian is not None for r in structures)
    t0 = time.perf_counter()
    preds: List[Prediction] = predict(
        model, structures, batch_size, hessian=has_hessians, progress=progress
    )
    seconds["predict"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows: List[Row] = []
    comparisons: Dict[int, HessianComparison] = {}
    pairs = tqdm(
        list(zip(structures, preds)),
        desc="structures",
        unit="structure",
        disable=not progress,
    )
    for i, (record, pred) in enumerate(pairs):
        comp = compare_structure(record, pred, imag_threshold)
        if comp is not None:
            comparisons[i] = comp
        rows.append(structure_row(i, record, pred, comp))
    names = dict(reaction_names or {})
    for row in rows:
        row.update(STRUCTURE_ROW(reaction_name=names.get(int(row["reaction"]), "")))
    pooled = {
        "all": pool(rows),
        "kind": {k: pool(v) for k, v in group_rows(rows, "kind").items()},
        "reaction": {k: pool(v) for k, v in group_rows(rows, "reaction").items()},
    }
    ref_e = [r.energy for r in structures]
    mod_e = [p.energy for p in preds]
    paths = reaction_paths(structures, names)
    barriers = barrier_rows(paths, ref_e, mod_e)
    profiles = [
        p for p in (irc_profile(rp, ref_e, mod_e) for rp in paths.values()) if p
    ]
    seconds["compare"] = time.perf_counter() - t0
    report = DownstreamReport(
        model=model.name,
        rows=rows,
        pooled=pooled,
        barriers=barriers,
        barrier_stats=barrier_stats(barriers),
        profiles=profiles,
        profile_stats=profile_stats(profiles),
        comparisons=comparisons,
        reaction_names=names,
        seconds=seconds,
        has_hessians=has_hessians,
        structures=structures,
        predictions=preds,
    )
    if ts_settings is not None:
        starts = ts_starts(structures, paths, ts_settings)
        if starts:
            t0 = time.perf_counter()
            calc = model.calculator()
            report.ts_results = ts_searches(
                calc, starts, ts_settings, progress=progress
            )
            report.ts_summary = summarize_ts_searches(report.ts_results)
            seconds["ts_search"] = time.perf_counter() - t0
    return report
