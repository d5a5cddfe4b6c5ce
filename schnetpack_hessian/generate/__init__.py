"""Generate reactive critical-point data: minima, transition states, IRC paths and
normal-mode samples with energies, forces and Hessians (pyscf or tblite + Sella).

Typical use::

    from schnetpack_hessian.generate import (
        GenerationConfig, assemble, dataset_metadata, generate, load_reactions,
    )

    config = GenerationConfig()  # ωB97X/6-31G(d) with pyscf
    outcomes = generate(load_reactions("reactions.yaml"), config, "work/")
    assemble(["work/"], "set.h5", metadata=dataset_metadata(config, outcomes))

Reactions can also be enumerated from SMILES (``enumerate_reactions``, RDKit).
See ``docs/GENERATE.md`` for the workflow script, sharding and job arrays.
"""

from schnetpack_hessian.generate.calculators import (
    EngineCalculator,
    MethodSpec,
    QCError,
    make_engine,
)
from schnetpack_hessian.generate.enumerate import (
    EnumeratedReaction,
    enumerate_reactions,
    read_molecules,
    write_reaction_list,
)
from schnetpack_hessian.generate.pathsearch import PathError
from schnetpack_hessian.generate.reactions import (
    Reaction,
    ReactionError,
    load_reactions,
    parse_shard,
    select_shard,
)
from schnetpack_hessian.generate.workflow import (
    GenerationConfig,
    ReactionOutcome,
    assemble,
    dataset_metadata,
    generate,
    iter_structures,
    merge,
    run_reaction,
)

__all__ = [
    "EngineCalculator",
    "EnumeratedReaction",
    "GenerationConfig",
    "MethodSpec",
    "PathError",
    "QCError",
    "Reaction",
    "ReactionError",
    "ReactionOutcome",
    "assemble",
    "dataset_metadata",
    "enumerate_reactions",
    "generate",
    "iter_structures",
    "load_reactions",
    "make_engine",
    "merge",
    "parse_shard",
    "read_molecules",
    "run_reaction",
    "select_shard",
    "write_reaction_list",
]
