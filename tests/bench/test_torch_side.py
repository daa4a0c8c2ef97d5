"""The PyTorch side of the benchmark (dllab_jax/bench/torch_side.py): a reference with other
parameter counts than the Flax model is refused before anything is timed."""

from __future__ import annotations

import pytest

from dllab_jax.bench import cases
from dllab_jax.errors import UserError


def test_a_reference_with_other_parameter_counts_is_refused(monkeypatch, tmp_path):
    pytest.importorskip("torch")
    import torch

    from dllab_jax.bench import __main__ as cli
    from dllab_jax.bench import torch_models

    monkeypatch.setattr(
        torch_models, "build_torch_model", lambda name, **kw: torch.nn.Linear(3, 10)
    )
    case = next(c for c in cases.SUITES["quick"] if c.name.startswith("CNN"))
    args = cli._parse(["--quick", "--rounds=1", "--steps-per-round=1", "--warmup=0"])
    with pytest.raises(UserError, match="reference of 'cnn' has 40 parameters"):
        cli.run_case(case, args, ["float32"], ["eager"], tmp_path)
