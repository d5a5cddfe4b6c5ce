"""Quantum-chemistry engines: energy, forces and Hessian of one geometry.

Two engines share one interface (:class:`Engine`):

- :class:`PySCFEngine` — Kohn–Sham DFT or Hartree–Fock with pyscf, analytic
  gradients and the **analytic** Hessian from pyscf's ``hessian`` module.  Default
  ωB97X/6-31G(d) (``method="wb97x"``), the level of Transition1x and HORM.
- :class:`TBLiteEngine` — GFN2-xTB with tblite, analytic gradients and a Hessian from
  central differences of them; cheap, for quick experiments and tests.

:class:`EngineCalculator` wraps an engine as an ASE calculator (energy, forces,
``get_hessian``) so ASE and Sella optimisers can drive it.  All results are in ASE
units: eV, eV/Å, eV/Å².
"""

from dataclasses import asdict, dataclass
from typing import Callable, Dict, Optional

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator, all_changes

from schnetpack_hessian.layout import blocks_to_square

__all__ = [
    "QCError",
    "MethodSpec",
    "QCResult",
    "Engine",
    "PySCFEngine",
    "TBLiteEngine",
    "EngineCalculator",
    "make_engine",
    "finite_difference_hessian",
]


class QCError(RuntimeError):
    """A quantum-chemistry calculation failed (e.g. SCF not converged)."""


@dataclass(frozen=True)
class MethodSpec:
    """Level of theory and numerical settings.

    Attributes:
        program: ``"pyscf"`` or ``"tblite"``.
        method: pyscf: exchange–correlation functional (``"wb97x"``, ``"b3lyp"``, ...)
            or ``"hf"``; tblite: ``"GFN2-xTB"`` or ``"GFN1-xTB"``.
        basis: pyscf basis set name (ignored by tblite).
        max_memory: pyscf memory limit in MB.
        conv_tol: SCF energy convergence threshold in Hartree.
        grid_level: pyscf DFT integration grid level (0–9).
        fd_step: tblite: displacement in Å for the finite-difference Hessian.
    """

    program: str = "pyscf"
    method: str = "wb97x"
    basis: str = "6-31g(d)"
    max_memory: int = 4000
    conv_tol: float = 1e-10
    grid_level: int = 3
    fd_step: float = 5e-3

    @classmethod
    def xtb(cls) -> "MethodSpec":
        """GFN2-xTB through tblite."""
        return cls(program="tblite", method="GFN2-xTB", basis="")

    def label(self) -> str:
        """Short human-readable level of theory, e.g. ``wb97x/6-31g(d)``."""
        return (
            self.method if self.program == "tblite" else f"{self.method}/{self.basis}"
        )


@dataclass
class QCResult:
    """Energy (eV), forces ``(N, 3)`` (eV/Å) and optionally the Hessian
    ``(3N, 3N)`` (eV/Å²) of one geometry."""

    energy: float
    forces: np.ndarray
    hessian: Optional[np.ndarray] = None


def finite_difference_hessian(
    forces_fn: Callable[[np.ndarray], np.ndarray],
    positions: np.ndarray,
    step: float = 5e-3,
    symmetrize: bool = True,
) -> np.ndarray:
    """Hessian from central differences of forces.

    .. math:: H_{:,k} = -\\frac{F(x + h e_k) - F(x - h e_k)}{2h}

    Args:
        forces_fn: maps positions ``(N, 3)`` in Å to forces ``(N, 3)`` in eV/Å.
        positions: ``(N, 3)`` reference positions in Å.
        step: displacement ``h`` in Å.
        symmetrize: return ``(H + Hᵀ)/2``.

    Returns:
        ``(3N, 3N)`` Hessian in eV/Å².
    """
    x0 = np.asarray(positions, dtype=np.float64)
    n3 = x0.size
    hess = np.empty((n3, n3))
    for k in range(n3):
        cols = []
        for sign in (1.0, -1.0):
            x = x0.copy().ravel()
            x[k] += sign * step
            cols.append(np.asarray(forces_fn(x.reshape(x0.shape))).ravel())
        hess[:, k] = -(cols[0] - cols[1]) / (2.0 * step)
    return 0.5 * (hess + hess.T) if symmetrize else hess


class Engine:
    """Base class: energy/forces/Hessian of a fixed-composition molecule.

    Results of the most recent geometry are cached, so an optimiser asking for
    energy and forces, then Sella asking for the Hessian at the same point, costs
    one calculation plus the Hessian.

    Args:
        spec: level of theory.
        charge: total charge.
        multiplicity: spin multiplicity 2S+1.
    """

    def __init__(self, spec: MethodSpec, charge: int = 0, multiplicity: int = 1):
        self.spec = spec
        self.charge = int(charge)
        self.multiplicity = int(multiplicity)
        self._cache_key: Optional[bytes] = None
        self._cache: Optional[QCResult] = None
        self.n_calls = 0
        self.n_hessians = 0

    def _run(
        self, numbers: np.ndarray, positions: np.ndarray, hessian: bool, fresh: bool
    ) -> QCResult:
        raise NotImplementedError

    def reset(self) -> None:
        """Forget cached results and carried-over SCF guesses."""
        self._cache_key, self._cache = None, None

    def compute(
        self,
        numbers: np.ndarray,
        positions: np.ndarray,
        hessian: bool = False,
        fresh: bool = False,
    ) -> QCResult:
        """Energy, forces and (if asked) Hessian at ``positions``.

        Args:
            numbers: ``(N,)`` atomic numbers.
            positions: ``(N, 3)`` positions in Å.
            hessian: also compute the ``(3N, 3N)`` Hessian.
            fresh: ignore cached results and any SCF guess carried over from the
                previous geometry (makes the result independent of call history).

        Returns:
            The :class:`QCResult` in eV, eV/Å, eV/Å².
        """
        numbers = np.asarray(numbers, dtype=np.int64)
        positions = np.ascontiguousarray(positions, dtype=np.float64)
        key = numbers.tobytes() + positions.tobytes()
        cached = self._cache if key == self._cache_key and not fresh else None
        if cached is not None and (not hessian or cached.hessian is not None):
            return cached
        result = self._run(numbers, positions, hessian, fresh)
        self.n_calls += 1
        self.n_hessians += int(hessian)
        self._cache_key, self._cache = key, result
        return result

    def hessian_function(self) -> Callable[[Atoms], np.ndarray]:
        """``atoms → (3N, 3N)`` Hessian in eV/Å², as Sella's ``hessian_function``."""
        return lambda atoms: self.compute(
            atoms.numbers, atoms.positions, hessian=True
        ).hessian

    def metadata(self) -> Dict[str, object]:
        """Level of theory, settings and program versions (JSON-serialisable)."""
        meta: Dict[str, object] = dict(asdict(self.spec))
        meta.update(
            label=self.spec.label(), charge=self.charge, multiplicity=self.multiplicity
        )
        return meta


class PySCFEngine(Engine):
    """pyscf (R/U)KS or (R/U)HF with analytic gradients and Hessians.

    The SCF density of the previous geometry is reused as the initial guess unless
    ``fresh=True``; unconverged SCFs are retried with the second-order solver.
    """

    def __init__(self, spec: MethodSpec, charge: int = 0, multiplicity: int = 1):
        super().__init__(spec, charge, multiplicity)
        import pyscf  # noqa: F401  (fail early with a clear ImportError)

        self._dm: Optional[np.ndarray] = None
        self._dm_numbers: Optional[bytes] = None

    def reset(self) -> None:
        super().reset()
        self._dm, self._dm_numbers = None, None

    def _build(self, numbers: np.ndarray, positions: np.ndarray):
        from pyscf import dft, gto, scf

        mol = gto.M(
            atom=[(int(z), tuple(x)) for z, x in zip(numbers, positions)],
            unit="Angstrom",
            basis=self.spec.basis,
            charge=self.charge,
            spin=self.multiplicity - 1,
            max_memory=self.spec.max_memory,
            verbose=0,
        )
        open_shell = self.multiplicity != 1
        if self.spec.method.lower() in ("hf", "rhf", "uhf"):
            mf = scf.UHF(mol) if open_shell else scf.RHF(mol)
        else:
            mf = dft.UKS(mol) if open_shell else dft.RKS(mol)
            mf.xc = self.spec.method
            mf.grids.level = self.spec.grid_level
        mf.conv_tol = self.spec.conv_tol
        mf.max_memory = self.spec.max_memory
        return mf

    def _run(self, numbers, positions, hessian, fresh):
        mf = self._build(numbers, positions)
        nkey = numbers.tobytes()
        dm0 = self._dm if (not fresh and self._dm_numbers == nkey) else None
        energy = mf.kernel(dm0=dm0)
        if not mf.converged:
            mf = mf.newton()
            energy = mf.kernel(dm0=mf.make_rdm1())
            if not mf.converged:
                raise QCError(
                    f"{self.spec.label()} SCF did not converge for "
                    f"{len(numbers)} atoms Z={numbers.tolist()} at positions "
                    f"{np.round(positions, 4).tolist()} Å"
                )
        self._dm, self._dm_numbers = mf.make_rdm1(), nkey
        grad = mf.nuc_grad_method().kernel()
        result = QCResult(
            energy=float(energy) * units.Hartree,
            forces=-np.asarray(grad) * units.Hartree / units.Bohr,
        )
        if hessian:
            h = np.asarray(mf.Hessian().kernel())  # (N, N, 3, 3) Hartree/Bohr²
            n = len(numbers)
            blocks = h.reshape(n * n, 3, 3)
            result.hessian = blocks_to_square(blocks) * units.Hartree / units.Bohr**2
        return result

    def metadata(self):
        import pyscf

        meta = super().metadata()
        meta.update(
            program_version=f"pyscf {pyscf.__version__}",
            hessian_method="analytic (pyscf.hessian)",
        )
        return meta


class TBLiteEngine(Engine):
    """GFN-xTB with tblite; Hessian by central differences of analytic gradients."""

    def __init__(self, spec: MethodSpec, charge: int = 0, multiplicity: int = 1):
        super().__init__(spec, charge, multiplicity)
        try:
            import tblite.interface  # noqa: F401
        except ImportError as err:
            raise ImportError(
                "tblite is not importable. If it is installed, its C extension may "
                "have found the older libgomp that torch loaded: import "
                "tblite.interface before torch (the generator script does), or set "
                "LD_PRELOAD to the system libgomp.so.1"
            ) from err

    def _gradient(self, numbers, positions):
        from tblite.interface import Calculator as TBCalculator

        calc = TBCalculator(
            self.spec.method,
            numbers,
            positions / units.Bohr,
            charge=float(self.charge),
            uhf=self.multiplicity - 1,
        )
        calc.set("verbosity", 0)
        try:
            res = calc.singlepoint()
        except RuntimeError as err:
            raise QCError(
                f"{self.spec.method} failed for Z={numbers.tolist()}: {err}"
            ) from err
        energy = float(res.get("energy")) * units.Hartree
        forces = -np.asarray(res.get("gradient")) * units.Hartree / units.Bohr
        return energy, forces

    def _run(self, numbers, positions, hessian, fresh):
        energy, forces = self._gradient(numbers, positions)
        result = QCResult(energy=energy, forces=forces)
        if hessian:
            result.hessian = finite_difference_hessian(
                lambda x: self._gradient(numbers, x)[1], positions, self.spec.fd_step
            )
        return result

    def metadata(self):
        from importlib.metadata import PackageNotFoundError, version

        try:  # the tblite module has no __version__; its distribution does
            tblite_version = version("tblite")
        except PackageNotFoundError:
            tblite_version = "unknown"
        meta = super().metadata()
        meta.update(
            program_version=f"tblite {tblite_version}",
            hessian_method=(
                f"central differences of analytic gradients, step {self.spec.fd_step} Å"
            ),
        )
        return meta


def make_engine(spec: MethodSpec, charge: int = 0, multiplicity: int = 1) -> Engine:
    """The engine for ``spec.program``."""
    engines = {"pyscf": PySCFEngine, "tblite": TBLiteEngine}
    if spec.program not in engines:
        raise ValueError(
            f"unknown quantum-chemistry program {spec.program!r}; "
            f"choose one of {sorted(engines)}"
        )
    return engines[spec.program](spec, charge, multiplicity)


class EngineCalculator(Calculator):
    """ASE calculator around an :class:`Engine` (energy, forces, Hessian).

    Args:
        engine: the quantum-chemistry engine.
    """

    implemented_properties = ["energy", "forces"]

    def __init__(self, engine: Engine, **kwargs):
        super().__init__(**kwargs)
        self.engine = engine

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        res = self.engine.compute(self.atoms.numbers, self.atoms.positions)
        self.results = {"energy": res.energy, "forces": res.forces.copy()}

    def get_hessian(self, atoms: Optional[Atoms] = None) -> np.ndarray:
        """``(3N, 3N)`` Hessian in eV/Å² at ``atoms`` (default: the attached atoms)."""
        atoms = atoms if atoms is not None else self.atoms
        return self.engine.compute(atoms.numbers, atoms.positions, hessian=True).hessian
