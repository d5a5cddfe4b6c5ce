"""Property keys and labels used across schnetpack-hessian.

SchNetPack's own keys (``energy``, ``forces``, ``_positions``, ``_n_atoms``, ...) live in
:mod:`schnetpack.properties`; this module adds the Hessian-specific ones so that no module
spells them as string literals.
"""

from typing import Final, Tuple

#: Hessian d²E/dR², stored per structure in SchNetPack's block layout ``(N², 3, 3)``;
#: block ``i·N + j`` holds d²E/dR_i dR_j.  A structure without a Hessian stores all-NaN.
hessian: Final[str] = "hessian"
#: Hessian-vector products ``(k, ΣN, 3)`` written by :class:`~schnetpack_hessian.Hessian`
#: in ``mode="hvp"``.
hessian_hvp: Final[str] = "hessian_hvp"
#: The probe vectors ``(k, ΣN, 3)`` used for :data:`hessian_hvp`.
hessian_probes: Final[str] = "hessian_probes"
#: Curvature labels along given probes, per atom ``(N, k, 3)`` (collated ``(ΣN, k, 3)``):
#: the probes (dimensionless) a Hessian-vector product label was taken along.  When a
#: batch holds them, :class:`~schnetpack_hessian.Hessian` in ``mode="hvp"`` computes its
#: products along these probes instead of drawing its own.
hessian_label_probes: Final[str] = "hessian_label_probes"
#: The labels ``H v`` along :data:`hessian_label_probes`, per atom ``(N, k, 3)`` in the
#: Hessian's unit (a teacher model's, :class:`~schnetpack_hessian.Teacher`).
hessian_label_hvp: Final[str] = "hessian_label_hvp"


def computed(key: str) -> str:
    """The key of the marker that says whether output ``key`` (a Hessian, HVP or
    probe key of :class:`~schnetpack_hessian.Hessian`) holds results in this call: a
    bool tensor of length 1 (computed) or 0 (skipped), so that its answer is host
    metadata that survives moves between devices and is read without waiting for a
    device.  Outputs the module's schedule skips hold an empty placeholder."""
    return f"_computed_{key}"


#: Per-structure label: the role of the geometry on its reaction path.
kind: Final[str] = "kind"
#: Per-structure label: integer id of the reaction the geometry belongs to (-1: none).
reaction: Final[str] = "reaction"
#: ``ase.Atoms.info`` key of the reaction's name where the source named it (the
#: names live in the file metadata ``reactions``; :func:`~schnetpack_hessian.data.iread`
#: gives them back).
reaction_name: Final[str] = "reaction_name"

#: Allowed values of :data:`kind`, in the order used for integer codes.
KINDS: Final[Tuple[str, ...]] = ("reactant", "product", "ts", "irc", "nms", "other")
#: Kinds that are critical points of the potential energy surface.
CRITICAL_KINDS: Final[Tuple[str, ...]] = ("reactant", "product", "ts")

#: Default units of stored properties (ASE unit strings, as SchNetPack uses them).
DEFAULT_UNITS: Final[dict] = {
    "energy": "eV",
    "forces": "eV/Ang",
    hessian: "eV/Ang/Ang",
}
