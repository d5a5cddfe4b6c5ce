"""Numbers and figures of a generated set's data card, read from the file itself.

:func:`set_statistics` reads a training file written by the generator (structures and
its ``reactions`` metadata) once; :func:`card_tables` turns the result into the
Markdown tables of the data card (counts per kind, reactions per edit type with the
rejections, rejection reasons, sizes, barriers and TS frequencies) and
:func:`plot_distributions` into its figure.  ``spkhess-generate card FILE`` prints
the tables; the shipped cards hold that output verbatim, and a test compares them.
"""

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from schnetpack_hessian import properties, vibrations
from schnetpack_hessian.generate.enumerate import EDITS
from schnetpack_hessian.generate.report import KCAL_PER_MOL
from schnetpack_hessian.markdown import table_lines

__all__ = [
    "HAND_WRITTEN",
    "SetStatistics",
    "edit_of",
    "rejection_category",
    "set_statistics",
    "card_tables",
    "card_text",
    "update_card",
    "rejected_table",
    "plot_distributions",
]

PathLike = Union[str, Path]

#: markers around the generated tables in a data card
CARD_BEGIN, CARD_END = "<!-- card tables: begin -->", "<!-- card tables: end -->"

#: the edit type of a reaction whose name is not ``"<edit>: ..."``
HAND_WRITTEN = "hand-written"

#: (pattern in the rejection reason, category), first match wins
_REJECTION_CATEGORIES: Tuple[Tuple[str, str], ...] = (
    (r"does not connect", "IRC does not connect reactant and product"),
    (r"changed the bonds", "an end point changes its bonds on optimisation"),
    (r"keeps \d+ imaginary", "a minimum keeps an imaginary mode"),
    (r"imaginary modes \(need exactly 1\)", "TS with != 1 imaginary mode"),
    (
        r"Sella (did not converge|failed)",
        "TS search (Sella) failed or did not converge",
    ),
    (r"minimisation did not", "minimisation did not converge"),
    (r"SCF not converged", "SCF not converged"),
    (r"too few points", "too few IRC / normal-mode points"),
    (
        r"left out at assembly",
        "left out at assembly: the largest, to bound the file size",
    ),
    (r"branch made no step", "IRC made no step"),
)


def edit_of(name: str) -> str:
    """The edit type of an enumerated reaction's name (``"torsion: CC=O >> ..."``),
    :data:`HAND_WRITTEN` for other names."""
    head = name.split(":", 1)[0].strip()
    return head if ":" in name and head in EDITS else HAND_WRITTEN


def rejection_category(reason: str) -> str:
    """A short category of a rejection reason (``"other: <reason>"`` if unknown)."""
    for pattern, category in _REJECTION_CATEGORIES:
        if re.search(pattern, reason):
            return category
    return "other: " + reason.strip()[:60]


@dataclass
class SetStatistics:
    """What a data card states about a generated set.

    Attributes:
        path: the file.
        size_mb: file size in MB (10⁶ bytes).
        kinds: structures per kind.
        n_atoms: atoms per accepted reaction (one entry per reaction).
        barriers: ``(forward, reverse)`` electronic barriers per reaction, kcal/mol.
        ts_frequency: imaginary TS frequency per reaction, cm⁻¹ (positive number).
        n_imaginary: imaginary modes (|ν| > 20 cm⁻¹) per kind of critical point.
        accepted: accepted reactions per edit type.
        rejected: rejected reactions per edit type.
        rejections: rejected reactions per reason category.
    """

    path: Path
    size_mb: float
    kinds: Dict[str, int] = field(default_factory=dict)
    n_atoms: List[int] = field(default_factory=list)
    barriers: List[Tuple[float, float]] = field(default_factory=list)
    ts_frequency: List[float] = field(default_factory=list)
    n_imaginary: Dict[str, Counter] = field(default_factory=dict)
    accepted: Counter = field(default_factory=Counter)
    rejected: Counter = field(default_factory=Counter)
    rejections: Counter = field(default_factory=Counter)

    @property
    def n_reactions(self) -> int:
        """Accepted reactions in the file."""
        return len(self.n_atoms)


def set_statistics(path: PathLike, imag_threshold: float = 20.0) -> SetStatistics:
    """Read a generated set once and collect its data card's numbers.

    Args:
        path: ``.h5`` / ``.db`` file written by ``spkhess-generate``.
        imag_threshold: modes with ``|ν|`` below this (cm⁻¹) are not counted as
            imaginary (the generator's own threshold).
    """
    from schnetpack_hessian import data

    path = Path(path)
    meta = data.file_metadata(path)
    stats = SetStatistics(path=path, size_mb=path.stat().st_size / 1e6)
    kinds: Counter = Counter()
    energy: Dict[int, Dict[str, float]] = defaultdict(dict)
    n_atoms: Dict[int, int] = {}
    frequency: Dict[int, float] = {}
    n_imaginary: Dict[str, Counter] = {k: Counter() for k in properties.CRITICAL_KINDS}
    for record in data.iread_records(path):
        rid, kind = int(record.reaction), record.kind
        kinds[kind] += 1
        n_atoms[rid] = record.n_atoms
        if kind not in properties.CRITICAL_KINDS:
            continue
        energy[rid][kind] = record.energy
        nu = vibrations.frequencies(record.hessian, atoms=record.as_atoms())
        imaginary = nu[nu < -imag_threshold]
        n_imaginary[kind][imaginary.size] += 1
        if kind == "ts":
            frequency[rid] = float(-nu[0])
    stats.kinds = {k: kinds[k] for k in properties.KINDS if kinds[k]}
    stats.n_imaginary = n_imaginary
    for rid in sorted(n_atoms):
        stats.n_atoms.append(n_atoms[rid])
        e = energy[rid]
        stats.barriers.append(
            (
                (e["ts"] - e["reactant"]) / KCAL_PER_MOL,
                (e["ts"] - e["product"]) / KCAL_PER_MOL,
            )
        )
        stats.ts_frequency.append(frequency[rid])
    for rid, entry in meta.get("reactions", {}).items():
        edit = edit_of(entry.get("name", ""))
        if entry.get("status") == "done" and int(rid) in n_atoms:
            stats.accepted[edit] += 1
        elif entry.get("status") == "rejected":
            stats.rejected[edit] += 1
            stats.rejections[rejection_category(entry.get("reason", ""))] += 1
    return stats


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> List[str]:
    return table_lines(header, rows) + [""]


def _quantiles(values: Sequence[float], fmt: str) -> List[str]:
    q = np.quantile(np.asarray(values, dtype=float), [0.0, 0.25, 0.5, 0.75, 1.0])
    return [format(v, fmt) for v in q]


def _acceptance_row(edit: str, accepted: int, rejected: int) -> List[object]:
    share = 100.0 * accepted / max(1, accepted + rejected)
    return [edit, accepted, rejected, f"{share:.0f} %"]


def card_tables(stats: SetStatistics) -> str:
    """The data card's Markdown tables (every number from the file)."""
    kinds = list(stats.kinds)
    lines = [
        f"File size {stats.size_mb:.1f} MB; {stats.n_reactions} reactions, "
        f"{sum(stats.kinds.values())} structures.",
        "",
    ]
    lines += _table(
        kinds + ["all"],
        [[stats.kinds[k] for k in kinds] + [sum(stats.kinds.values())]],
    )
    edits = [
        e for e in (*EDITS, HAND_WRITTEN) if stats.accepted[e] or stats.rejected[e]
    ]
    rows = [_acceptance_row(e, stats.accepted[e], stats.rejected[e]) for e in edits]
    rows.append(
        _acceptance_row(
            "all", sum(stats.accepted.values()), sum(stats.rejected.values())
        )
    )
    lines += _table(["edit type", "accepted", "rejected", "acceptance"], rows)
    if stats.rejections:
        lines += _table(
            ["rejection reason", "reactions"], stats.rejections.most_common()
        )
    else:
        lines += ["No reaction was rejected.", ""]
    sizes = Counter(stats.n_atoms)
    lines += _table(
        ["atoms", *sorted(sizes)], [["reactions", *(sizes[n] for n in sorted(sizes))]]
    )
    forward = [b[0] for b in stats.barriers]
    reverse = [b[1] for b in stats.barriers]
    lines += _table(
        ["quantity", "min", "25 %", "median", "75 %", "max"],
        [
            ["forward barrier (kcal/mol)", *_quantiles(forward, ".1f")],
            ["reverse barrier (kcal/mol)", *_quantiles(reverse, ".1f")],
            ["TS imaginary frequency (cm⁻¹)", *_quantiles(stats.ts_frequency, ".0f")],
        ],
    )
    lines += _table(
        ["critical point", "imaginary modes: structures"],
        [
            [k, ", ".join(f"{n}: {c}" for n, c in sorted(stats.n_imaginary[k].items()))]
            for k in properties.CRITICAL_KINDS
        ],
    )
    return "\n".join(lines)


def rejected_table(path: PathLike) -> str:
    """Markdown table of the reactions of a generated file's list that are not in
    it: id, name and the full reason (for small sets; large ones use the categories
    of :func:`card_tables`)."""
    from schnetpack_hessian import data

    reactions = data.file_metadata(path).get("reactions", {})
    rows = [
        [rid, entry.get("name", ""), entry.get("reason", "").replace("|", "/")]
        for rid, entry in sorted(reactions.items(), key=lambda kv: int(kv[0]))
        if entry.get("status") != "done"
    ]
    if not rows:
        return "No reaction recorded in the file's metadata is missing from it.\n"
    return "\n".join(_table(["id", "reaction not in the file", "reason"], rows))


def card_text(
    path: PathLike, per_reaction: bool = False, stats: Optional[SetStatistics] = None
) -> str:
    """Everything ``spkhess-generate card`` prints: :func:`card_tables`, and with
    ``per_reaction`` one row per reaction (:func:`~.report.summarize`) and the
    :func:`rejected_table`.  ``stats``: :func:`set_statistics` of ``path`` if already
    read."""
    from schnetpack_hessian.generate.report import summarize

    text = card_tables(stats or set_statistics(path))
    if per_reaction:
        text += "\n" + summarize(path).split("\n\n", 1)[1]
        text += "\n" + rejected_table(path)
    return text


def update_card(card: PathLike, tables: str) -> Path:
    """Replace the text between :data:`CARD_BEGIN` and :data:`CARD_END` in the data
    card ``card`` by ``tables``; the rest of the card is kept as written.

    Raises:
        ValueError: the card lacks the markers (named in the message).
    """
    card = Path(card)
    text = card.read_text()
    if CARD_BEGIN not in text or CARD_END not in text:
        raise ValueError(f"{card}: no '{CARD_BEGIN}' ... '{CARD_END}' section")
    head, rest = text.split(CARD_BEGIN, 1)
    _, tail = rest.split(CARD_END, 1)
    card.write_text(f"{head}{CARD_BEGIN}\n\n{tables.strip()}\n\n{CARD_END}{tail}")
    return card


def plot_distributions(
    stats: SetStatistics, out: PathLike, title: Optional[str] = None
):
    """A PNG with the size histogram and the barrier and TS-frequency distributions.

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), constrained_layout=True)
    sizes = np.asarray(stats.n_atoms)
    axes[0].hist(
        sizes, bins=np.arange(sizes.min() - 0.5, sizes.max() + 1.5), color="C0"
    )
    axes[0].set(xlabel="atoms per reaction", ylabel="reactions")
    barriers = np.asarray(stats.barriers)
    bins = np.linspace(min(0.0, float(barriers.min())), float(barriers.max()) + 1.0, 30)
    axes[1].hist(barriers[:, 0], bins=bins, alpha=0.6, label="forward", color="C1")
    axes[1].hist(barriers[:, 1], bins=bins, alpha=0.6, label="reverse", color="C2")
    axes[1].set(xlabel="barrier (kcal/mol)", ylabel="reactions")
    axes[1].legend()
    axes[2].hist(stats.ts_frequency, bins=30, color="C3")
    axes[2].set(xlabel="TS imaginary frequency (cm⁻¹)", ylabel="reactions")
    fig.suptitle(title or stats.path.name)
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
