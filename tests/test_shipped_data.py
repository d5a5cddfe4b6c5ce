"""The data files that ship in the package are the ones the slow set checked.

``datasets/SHA256SUMS`` (``sha256sum`` format, so ``sha256sum -c`` verifies an
installed copy too) pins every shipped data file. The content checks of the GFN2-xTB
bulk set (tests/generate/test_xtb_set.py: complete reactions, first-order saddles,
the card's tables, ``spkhess-convert --check``) read 7,000 structures and belong to
the slow set; a file whose digest no longer matches must pass them again before its
new digest is written here.
"""

from schnetpack_hessian.datasets import DATASET_DIR
from schnetpack_hessian.files import file_sha256


def _sums():
    lines = (DATASET_DIR / "SHA256SUMS").read_text().splitlines()
    return dict(reversed(line.split(maxsplit=1)) for line in lines if line.strip())


def test_every_shipped_data_file_is_pinned():
    shipped = {p.name for p in DATASET_DIR.iterdir() if p.suffix in (".h5", ".db")}
    assert shipped and set(_sums()) == shipped


def test_shipped_data_files_match_their_digests():
    for name, expected in _sums().items():
        assert file_sha256(DATASET_DIR / name) == expected, (
            f"{DATASET_DIR / name} changed: run `pytest -m slow "
            "tests/generate/test_xtb_set.py` and update datasets/SHA256SUMS"
        )
