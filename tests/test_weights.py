"""The one weights reader: checksums, weights-only .pth reading, unwrapping, strict loading."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from bitseek.errors import FileFormatError
from bitseek.weights import (
    WRAPPER_KEYS,
    load_state_into,
    read_model_config,
    read_model_weights,
    read_state_dict,
    read_torch_file,
    save_model,
    sha256_file,
    unwrap_state_dict,
)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))


def test_save_records_checksum_and_versions(tmp_path):
    save_model(tmp_path / "m", _net(), {"name": "toy", "bits": 8}, extra={"epoch": 3})
    meta = read_model_config(tmp_path / "m")
    assert meta["weights_sha256"] == sha256_file(tmp_path / "m" / "model.safetensors")
    assert meta["epoch"] == 3 and meta["torch_version"] == torch.__version__ and meta["format_version"] == 2


def test_flipped_byte_in_tensor_data_is_detected(tmp_path):
    net = _net()
    save_model(tmp_path / "m", net, {"name": "toy"})
    p = tmp_path / "m" / "model.safetensors"
    b = bytearray(p.read_bytes())
    b[-3] ^= 0x80  # inside the tensor data; the safetensors header stays valid
    p.write_bytes(bytes(b))
    with pytest.raises(FileFormatError, match="checksum mismatch"):
        read_model_weights(tmp_path / "m")


def test_version_1_folder_still_loads_unverified(tmp_path, caplog):
    net = _net()
    save_model(tmp_path / "m", net, {"name": "toy"})
    cj = tmp_path / "m" / "config.json"
    meta = json.loads(cj.read_text())
    meta["format_version"] = 1
    del meta["weights_sha256"]
    cj.write_text(json.dumps(meta))
    sd = read_model_weights(tmp_path / "m")
    assert torch.equal(sd["0.weight"], net.state_dict()["0.weight"])
    assert "cannot be verified" in caplog.text


def test_version_2_without_checksum_is_corrupt(tmp_path):
    save_model(tmp_path / "m", _net(), {"name": "toy"})
    cj = tmp_path / "m" / "config.json"
    meta = json.loads(cj.read_text())
    del meta["weights_sha256"]
    cj.write_text(json.dumps(meta))
    with pytest.raises(FileFormatError, match="weights_sha256"):
        read_model_config(tmp_path / "m")


@pytest.mark.parametrize("wrapper", WRAPPER_KEYS)
def test_unwrap_every_wrapper_key_and_module_prefix(wrapper):
    sd = {"module.a": torch.zeros(2), "module.b": torch.ones(1)}
    out = unwrap_state_dict({wrapper: sd, "epoch": 5, "optimizer_state_dict": {"lr": 1}})
    assert sorted(out) == ["a", "b"]


def test_unwrap_nested_twice():
    out = unwrap_state_dict({"state_dict": {"model": {"w": torch.zeros(1)}, "step": 1}})
    assert list(out) == ["w"]


def test_unwrap_refuses_non_tensors():
    with pytest.raises(FileFormatError, match="non-tensor entries"):
        unwrap_state_dict({"w": torch.zeros(1), "note": "x"})
    with pytest.raises(FileFormatError, match="empty"):
        unwrap_state_dict({})


def test_truncated_pth_is_a_file_format_error(tmp_path):
    p = tmp_path / "w.pth"
    torch.save({"state_dict": _net().state_dict()}, p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])  # torch raises OSError for a cut zip archive
    with pytest.raises(FileFormatError, match="cannot read as a weights-only torch checkpoint"):
        read_torch_file(p)


def test_pth_with_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    p = tmp_path / "evil.pth"
    code = (f"import os, torch\nclass E:\n    def __reduce__(self):\n        return (os.system, ('touch {marker}',))\n"
            f"torch.save({{'w': E()}}, {str(p)!r})\n")
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(FileFormatError, match="weights-only"):
        read_state_dict(p)
    assert not marker.exists()


def test_read_state_dict_safetensors_and_pth_agree(tmp_path):
    from safetensors.torch import save_file

    sd = _net().state_dict()
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "w.safetensors"))
    torch.save({"model": sd}, tmp_path / "w.pth")
    a, b = read_state_dict(tmp_path / "w.safetensors"), read_state_dict(tmp_path / "w.pth")
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(FileFormatError, match="unsupported weights format"):
        (tmp_path / "w.txt").write_text("x")
        read_state_dict(tmp_path / "w.txt")


def test_load_state_into_lists_every_problem():
    net = _net()
    sd = dict(net.state_dict())
    sd.pop("0.bias")
    sd["extra"] = torch.zeros(1)
    sd["0.weight"] = torch.zeros(5, 4)
    with pytest.raises(FileFormatError) as e:
        load_state_into(net, sd, "src")
    msg = str(e.value)
    assert "missing keys: 0.bias" in msg and "unexpected keys: extra" in msg and "0.weight (file (5, 4)" in msg


def test_load_state_into_optional_suffix_and_cast():
    net = _net()
    sd = {k: v.double() for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    load_state_into(net, sd, "src", optional_suffixes=("num_batches_tracked",), cast=True)
    assert net[0].weight.dtype == torch.float32


def test_weights_is_a_leaf_module():
    code = ("import sys, bitseek.weights; bad = [m for m in sys.modules if m.startswith(('bitseek.train', "
            "'bitseek.models', 'bitseek.config', 'bitseek.registry'))]; print(bad); assert not bad")
    subprocess.run([sys.executable, "-c", code], check=True)
