"""Stored Hessian-vector product labels: written, read back, loaded in the Hessian's
unit, and trained on along their own probes."""

from dataclasses import replace

import numpy as np
import pytest
import torch

import schnetpack.properties as structure
import schnetpack.transform as trn

from schnetpack_hessian import Hessian, HessianOutput, properties
from schnetpack_hessian.data import HessianDataModule, file_metadata
from schnetpack_hessian.data.io import RecordWriter, read_records
from schnetpack_hessian.data.record import ProductLabels, record_from_atoms
from schnetpack_hessian.data.testing import make_atoms
from schnetpack_hessian.data.units import ASE_UNITS
from schnetpack_hessian.data.validation import HessianDataError
from schnetpack_hessian.testing import make_potential

K = 2


def _records(n=8):
    """Records with reference Hessians; every third one without product labels,
    the others labelled with H v along random probes (eV/Å²)."""
    rng = np.random.default_rng(0)
    out = []
    for i, atoms in enumerate(make_atoms(n_structures=n, seed=2, missing_every=0)):
        record = record_from_atoms(atoms)
        if i % 3 == 2:
            out.append(record)
            continue
        n_atoms = record.n_atoms
        probes = rng.normal(size=(n_atoms, K, 3))
        v = probes.transpose(1, 0, 2).reshape(K, 3 * n_atoms)
        products = (v @ record.hessian.T).reshape(K, n_atoms, 3).transpose(1, 0, 2)
        out.append(replace(record, product_labels=ProductLabels(probes, products)))
    return out


@pytest.fixture(params=["h5", "db"])
def labelled_file(request, tmp_path):
    path = tmp_path / f"labels.{request.param}"
    with RecordWriter(path, ASE_UNITS, product_labels=K) as writer:
        for record in _records():
            writer.add(record)
    return path


def test_labels_round_trip_and_missing_ones_are_zero_probes_nan_products(
    labelled_file,
):
    written = _records()
    read = list(read_records(labelled_file))
    assert file_metadata(labelled_file)["product_labels"]["k"] == K
    for before, after in zip(written, read):
        labels = after.product_labels
        if before.product_labels is None:
            assert not labels.probes.any() and np.isnan(labels.products).all()
        else:
            np.testing.assert_array_equal(labels.probes, before.product_labels.probes)
            np.testing.assert_allclose(
                labels.products, before.product_labels.products, rtol=1e-15
            )


def test_loaded_products_follow_the_hessians_unit(labelled_file, tmp_path):
    """property_units converts the Hessian to kcal/mol/Å²: the products come in
    the same unit, the probes unchanged, collated per atom (ΣN, k, 3)."""
    dm = HessianDataModule(
        str(labelled_file),
        batch_size=8,
        num_train=6,
        num_val=2,
        split_file=str(tmp_path / "split.npz"),
        splitting="random",
        property_units={
            "energy": "kcal/mol",
            "forces": "kcal/mol/Ang",
            "hessian": "kcal/mol/Ang/Ang",
        },
    )
    dm.setup()
    dataset = dm.train_dataset
    for i in range(len(dataset)):
        item = dataset[i]
        n = int(item[structure.n_atoms])
        probes = item[properties.hessian_label_probes]
        products = item[properties.hessian_label_hvp]
        assert probes.shape == products.shape == (n, K, 3)
        if not torch.isnan(products).all():
            square = item[properties.hessian].reshape(n, n, 3, 3)
            square = square.permute(0, 2, 1, 3).reshape(3 * n, 3 * n)
            v = probes.permute(1, 0, 2).reshape(K, 3 * n)
            expected = (v @ square.T).reshape(K, n, 3).permute(1, 0, 2)
            torch.testing.assert_close(products, expected, rtol=1e-10, atol=1e-9)
            assert products.abs().max() > 0  # eV labels would be 23× too small
    batch = next(iter(dm.train_dataloader()))
    n_total = int(batch[structure.n_atoms].sum())
    assert batch[properties.hessian_label_probes].shape == (n_total, K, 3)


@pytest.mark.parametrize("representation", ["schnet", "painn"])
def test_a_model_trains_on_stored_labels_along_their_probes(
    labelled_file, tmp_path, representation
):
    """The Hessian module takes the batch's stored probes; HessianOutput(target_form
    ='hvp') compares its products with the stored ones, structures without labels
    left out."""
    dm = HessianDataModule(
        str(labelled_file),
        batch_size=8,
        num_train=8,
        num_val=0,
        num_test=0,
        split_file=str(tmp_path / "split.npz"),
        splitting="random",
        transforms=[trn.MatScipyNeighborList(cutoff=5.0)],
    )
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    batch = {k: v.double() if v.is_floating_point() else v for k, v in batch.items()}
    model = make_potential(
        representation, [Hessian(mode="hvp", probes=dict(n=K))]
    ).train()
    with torch.enable_grad():
        pred = model(dict(batch))
    stored = batch[properties.hessian_label_probes].transpose(0, 1)
    assert torch.equal(pred[properties.hessian_probes], stored)
    output = HessianOutput(target_form="hvp", probe="gaussian")
    loss = output.calculate_loss(pred, batch)
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_labels_of_the_wrong_count_or_in_a_file_without_labels_are_refused(tmp_path):
    records = _records(3)
    with pytest.raises(HessianDataError, match="has 2 product labels, the file 3"):
        with RecordWriter(tmp_path / "a.h5", ASE_UNITS, product_labels=3) as writer:
            writer.add(records[0])
    with pytest.raises(HessianDataError, match="written without"):
        with RecordWriter(tmp_path / "b.h5", ASE_UNITS) as writer:
            writer.add(records[0])
    bad = replace(
        records[0],
        product_labels=ProductLabels(
            records[0].product_labels.probes[:1], records[0].product_labels.products[:1]
        ),
    )
    with pytest.raises(HessianDataError, match="expected"):
        with RecordWriter(tmp_path / "c.h5", ASE_UNITS, product_labels=K) as writer:
            writer.add(bad)
