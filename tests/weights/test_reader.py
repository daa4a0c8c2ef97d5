"""The one reader of published weights (dllab_jax/weights/reader.py): HF folders (single and
sharded safetensors, pytorch_model.bin), single files, and what it refuses."""

import json
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import save_file

from dllab_jax import registry
from dllab_jax.errors import UserError
from dllab_jax.weights import reader

A = np.arange(6, dtype=np.float32).reshape(2, 3)
B = np.ones(4, np.float16)


def test_sharded_safetensors_folder(tmp_path):
    save_file({"a": A}, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file({"b": B}, str(tmp_path / "model-00002-of-00002.safetensors"))
    weight_map = {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    tensors = reader.read_hf_state_dict(tmp_path)
    assert sorted(tensors) == ["a", "b"]
    np.testing.assert_array_equal(tensors["a"], A)
    assert tensors["b"].shape == (4,)


def test_torch_files_and_numpy_conversion(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save({"a": torch.from_numpy(A), "n": torch.tensor(3)}, tmp_path / "pytorch_model.bin")
    tensors = reader.read_hf_state_dict(tmp_path)
    assert tensors["a"].dtype == np.float32 and tensors["n"].shape == ()
    np.testing.assert_array_equal(tensors["a"], A)
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(UserError, match="does not hold a state dict"):
        reader.read_weight_file(tmp_path / "list.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="cannot read"):
        reader.read_weight_file(tmp_path / "junk.pth")


def test_missing_weights_and_config_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="no weights"):
        reader.read_hf_state_dict(tmp_path)
    with pytest.raises(UserError, match="config"):
        reader.read_hf_config(tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        reader.model_folder(tmp_path / "nowhere", "BLIP model")


def test_every_format_is_registered_and_no_module_imports_torch():
    assert registry.weight_formats.names() == [
        "dino_vit",
        "hf_blip",
        "hf_blip_captioner",
        "torchvision_resnet18",
    ]
    code = (
        "import sys\n"
        "from dllab_jax import registry\n"
        "registry.weight_formats.import_all()\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
