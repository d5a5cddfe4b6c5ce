"""ORCA .hess + .engrad (Hartree, Bohr)."""

import numpy as np
import pytest
from ase.units import Bohr, Hartree

from schnetpack_hessian.convert import (
    ConversionError,
    PhysicsCheck,
    convert,
    open_source,
)
from schnetpack_hessian.data import iread, read_records

HESS = """
$orca_hessian_file

$act_atom
  0

$act_coord
  0

$act_energy
       -76.326680

$hessian
6
                  0          1          2          3          4
      0       0.5123400E+00  -0.1000000E-01   0.2000000E-01  -0.5123400E+00   0.1000000E-01
      1      -0.1000000E-01   0.4000000E+00   0.3000000E-02   0.1000000E-01  -0.4000000E+00
      2       0.2000000E-01   0.3000000E-02   0.3000000E+00  -0.2000000E-01  -0.3000000E-02
      3      -0.5123400E+00   0.1000000E-01  -0.2000000E-01   0.5123400E+00  -0.1000000E-01
      4       0.1000000E-01  -0.4000000E+00  -0.3000000E-02  -0.1000000E-01   0.4000000E+00
      5      -0.2000000E-01  -0.3000000E-02  -0.3000000E+00   0.2000000E-01   0.3000000E-02
                  5
      0      -0.2000000E-01
      1      -0.3000000E-02
      2      -0.3000000E+00
      3       0.2000000E-01
      4       0.3000000E-02
      5       0.3000000E+00

$vibrational_frequencies
6
    0       0.000000
    1       0.000000
    2       0.000000
    3       0.000000
    4       0.000000
    5    4401.000000

$atoms
2
 H      1.00800     0.000000000000     0.000000000000     0.000000000000
 H      1.00800     0.000000000000     0.000000000000     1.400000000000

$end
"""

ENGRAD = """#
# Number of atoms
#
 2
#
# The current total energy in Eh
#
     -1.173428000000
#
# The current gradient in Eh/bohr
#
       0.000000000000
       0.000000000000
      -0.012000000000
       0.000000000000
       0.000000000000
       0.012000000000
#
# The atomic numbers and current coordinates in Bohr
#
   1     0.0000000    0.0000000    0.0000000
   1     0.0000000    0.0000000    1.4000000
"""


@pytest.fixture
def orca_files(tmp_path):
    (tmp_path / "h2.hess").write_text(HESS)
    (tmp_path / "h2.engrad").write_text(ENGRAD)
    return tmp_path / "h2.hess"


def test_orca_to_db_units(tmp_path, orca_files):
    out = tmp_path / "orca.db"
    # HESS exercises the column-block layout with distinct numbers; they are no
    # physical H2 (the sum rules fail), so the physics checks are off here.
    convert([orca_files], out, kind="reactant", physics=PhysicsCheck("off"))
    rec = next(read_records(out))
    assert rec.hessian[0, 0] == 0.51234 and rec.hessian[5, 5] == 0.3
    assert rec.hessian[0, 5] == -0.02 and rec.energy == -1.173428
    np.testing.assert_array_equal(rec.forces[:, 2], [0.012, -0.012])  # -gradient
    atoms = next(iread(out))
    assert atoms.info["kind"] == "reactant"
    np.testing.assert_allclose(
        atoms.info["hessian"][0, 0], 0.51234 * Hartree / Bohr**2, rtol=1e-12
    )
    np.testing.assert_allclose(atoms.positions[1, 2], 1.4 * Bohr, rtol=1e-12)
    np.testing.assert_allclose(
        atoms.get_forces()[0, 2], 0.012 * Hartree / Bohr, rtol=1e-12
    )


def test_orca_writer_roundtrip(tmp_path, orca_files):
    from schnetpack_hessian.convert.orca import parse_engrad, parse_hess, write_hess

    numbers, pos, h = parse_hess(orca_files)
    e, g, _ = parse_engrad(orca_files.with_suffix(".engrad"))
    write_hess(tmp_path / "copy.hess", numbers, pos, h, energy=e, gradient=g)
    n2, p2, h2 = parse_hess(tmp_path / "copy.hess")
    np.testing.assert_array_equal(h2, h)
    np.testing.assert_array_equal(p2, pos)


def test_orca_errors(tmp_path, orca_files):
    orca_files.with_suffix(".engrad").unlink()
    with pytest.raises(ConversionError, match="no h2.engrad next to it"):
        list(open_source([orca_files]).records)
    bad = tmp_path / "bad.hess"
    bad.write_text(HESS.replace("$hessian\n6", "$hessian\n9"))
    with pytest.raises(ConversionError, match="9x9 but \\$atoms has 2 atoms"):
        list(open_source([bad]).records)
