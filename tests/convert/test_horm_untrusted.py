"""Crafted HORM records never run code: every global outside the exact allow-list is
refused before it is called, in ``convert`` and in ``spkhess-convert --check``."""

import io
import os
import pickle
import struct

import numpy as np
import pytest
import torch

from schnetpack_hessian.cli.convert import main
from schnetpack_hessian.convert import ConversionError, check, convert
from schnetpack_hessian.convert.horm import HormUnpickler, load_record

lmdb = pytest.importorskip("lmdb")


def _unicode(text: str) -> bytes:
    raw = text.encode("utf-8")
    return b"\x8c" + bytes([len(raw)]) + raw  # SHORT_BINUNICODE


def _stack_global_call(module: str, name: str, arg: str, protocol: int) -> bytes:
    """``module``/``name`` resolved by STACK_GLOBAL (protocol ≥ 4), called on ``arg``."""
    return (
        b"\x80"
        + bytes([protocol])
        + _unicode(module)
        + _unicode(name)
        + b"\x93"  # STACK_GLOBAL
        + _unicode(arg)
        + b"\x85"  # TUPLE1
        + b"R."  # REDUCE, STOP
    )


def _global_call(module: str, name: str, arg: str, protocol: int) -> bytes:
    """``module``/``name`` resolved by GLOBAL (protocols 0–3), called on ``arg``."""
    head = b"" if protocol == 0 else b"\x80" + bytes([protocol])
    text = arg.encode()
    return (
        head
        + b"c"
        + f"{module}\n{name}\n".encode()
        + b"X"  # BINUNICODE
        + struct.pack("<I", len(text))
        + text
        + b"\x85R."
    )


def _inst_call(module: str, name: str, arg: str) -> bytes:
    """Protocol 0's INST opcode: ``(S'arg'\\ni module\\nname\\n.``."""
    return b"(S'" + arg.encode() + b"'\ni" + f"{module}\n{name}\n".encode() + b"."


class _Shell:
    """Reduces to os.system(command): what a malicious record would carry."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _nested_storage_payload(command: str, protocol: int) -> bytes:
    """A tensor storage whose ``torch.save`` payload is itself a malicious pickle."""
    inner = pickle.dumps(_Shell(command), protocol=2)
    return (
        b"\x80"
        + bytes([protocol])
        + _unicode("torch.storage")
        + _unicode("_load_from_bytes")
        + b"\x93"
        + b"C"  # SHORT_BINBYTES
        + bytes([len(inner)])
        + inner
        + b"\x85R."
    )


def _crafted(command: str):
    """(label, payload) of every trick, each of which would run ``command``."""
    cases = []
    for protocol in (4, 5):
        for module, name in [
            ("torch", "os.system"),
            ("numpy", "testing._private.utils.os.system"),
            ("os", "system"),
            ("collections", "os.system"),
            ("posix", "system"),
            ("builtins", "eval"),
            ("torch._utils", "_rebuild_tensor_v2.__globals__.get"),
            ("torch_geometric.data.data", "os.system"),
            ("torch_geometric", "Data"),
        ]:
            cases.append(
                (
                    f"p{protocol}-{module}.{name}",
                    _stack_global_call(module, name, command, protocol),
                )
            )
        cases.append(
            (f"p{protocol}-nested-storage", _nested_storage_payload(command, protocol))
        )
    for protocol in (0, 2, 3):
        for module, name in [
            ("os", "system"),
            ("torch", "os.system"),
            ("nt", "system"),
        ]:
            cases.append(
                (
                    f"p{protocol}-global-{module}.{name}",
                    _global_call(module, name, command, protocol),
                )
            )
    cases.append(("p0-inst-os.system", _inst_call("os", "system", command)))
    for protocol in (2, 3, 4, 5):
        cases.append(
            (f"p{protocol}-reduce", pickle.dumps(_Shell(command), protocol=protocol))
        )
        cases.append(
            (
                f"p{protocol}-object-array",
                pickle.dumps(np.array([1, "x"], dtype=object), protocol=protocol),
            )
        )
    return cases


_LABELS = [label for label, _ in _crafted("true")]


def _write(path, record: bytes, length: bytes = None):
    env = lmdb.open(str(path), subdir=False, map_size=1 << 22, meminit=False)
    with env.begin(write=True) as txn:
        txn.put(b"0", record)
        txn.put(b"length", length if length is not None else pickle.dumps(1))
    env.close()


@pytest.mark.parametrize("label", _LABELS)
def test_crafted_record_refused_before_it_runs(tmp_path, label, capsys):
    marker = tmp_path / "ran"
    payload = dict(_crafted(f"touch {marker}"))[label]
    path = tmp_path / "crafted.lmdb"
    _write(path, payload)
    out = tmp_path / "out.h5"
    with pytest.raises(ConversionError, match=r"crafted\.lmdb.*(refusing|not)"):
        convert([path], out)
    with pytest.raises(ConversionError, match="refusing|not"):
        check([path])
    assert main(["--check", str(path), "--quiet"]) != 0
    assert "crafted.lmdb" in capsys.readouterr().err
    assert not marker.exists(), f"{label}: the record ran its command"
    assert not out.exists()


def test_crafted_length_entry_refused(tmp_path, path_records, write_horm_lmdb):
    marker = tmp_path / "ran"
    path = tmp_path / "crafted.lmdb"
    _write(
        path,
        pickle.dumps(1),
        length=_stack_global_call("torch", "os.system", f"touch {marker}", 4),
    )
    with pytest.raises(ConversionError, match="refusing"):
        check([path])
    assert not marker.exists()


def test_genuine_records_of_every_protocol_load(path_records):
    """Tensors (PyG 2.x layout), numpy arrays and scalars pickled at protocols 2–5."""
    r = path_records[0]
    for protocol in (2, 3, 4, 5):
        for value in (
            torch.tensor(r.positions, dtype=torch.float32),
            np.asarray(r.positions, dtype=np.float32),
        ):
            raw = pickle.dumps({"pos": value, "e": np.float32(1.5)}, protocol=protocol)
            loaded = HormUnpickler(io.BytesIO(raw)).load()
            got = loaded["pos"]
            got = got.numpy() if hasattr(got, "numpy") else got
            np.testing.assert_array_equal(got, r.positions.astype(np.float32))
            assert loaded["e"] == np.float32(1.5)


def test_build_cannot_tamper_with_later_loads(horm_file_bytes):
    """A record that sets attributes on a function it resolved (pickle's BUILD with
    slot state) changes only its own load's wrapper, never torch's function."""
    import torch._utils

    target = torch._utils._rebuild_tensor_v2
    before = target.__kwdefaults__
    tamper = (
        b"\x80\x04"
        + _unicode("torch._utils")
        + _unicode("_rebuild_tensor_v2")
        + b"\x93N}"  # the function, then state (None, {"__kwdefaults__": {"x": 1}})
        + _unicode("__kwdefaults__")
        + b"}"
        + _unicode("x")
        + b"K\x01ss\x86b."  # SETITEM ×2, TUPLE2, BUILD, STOP
    )
    try:
        HormUnpickler(io.BytesIO(tamper)).load()
        assert target.__kwdefaults__ == before
    finally:
        target.__kwdefaults__ = before
    assert load_record(horm_file_bytes)["pos"].shape == (4, 3)


@pytest.fixture
def horm_file_bytes(tmp_path, path_records, write_horm_lmdb):
    path = tmp_path / "ok.lmdb"
    write_horm_lmdb(path, path_records)
    env = lmdb.open(str(path), subdir=False, readonly=True, lock=False)
    with env.begin() as txn:
        raw = bytes(txn.get(b"0"))
    env.close()
    return raw
