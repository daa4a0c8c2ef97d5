"""The speed choices (dllab_jax/performance.py, dllab_jax/models/layers.py) change no result:
same parameters, same outputs and gradients as flax's own layers; the XLA flags are added
only where measured and never over a user's choice."""

from __future__ import annotations

import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dllab_jax import performance
from dllab_jax.models import layers


@pytest.mark.parametrize("shape", [(2, 8, 6, 3), (1, 7, 5, 2)])
def test_max_pool_2x2_equals_flax_max_pool(shape):
    x = jnp.asarray(np.random.default_rng(0).standard_normal(shape), jnp.float32)
    ours = layers.max_pool_2x2(x)
    reference = nn.max_pool(x, (2, 2), strides=(2, 2))
    assert ours.shape == reference.shape == (shape[0], shape[1] // 2, shape[2] // 2, shape[3])
    np.testing.assert_array_equal(ours, reference)
    # Gradients: without ties (random floats) both route each cotangent to the window max.
    g_ours = jax.grad(lambda x: (layers.max_pool_2x2(x) ** 2).sum())(x)
    g_ref = jax.grad(lambda x: (nn.max_pool(x, (2, 2), strides=(2, 2)) ** 2).sum())(x)
    np.testing.assert_allclose(g_ours, g_ref, rtol=1e-6)


@pytest.mark.parametrize("kernel,padding", [(2, "SAME"), (2, "VALID"), (7, "VALID"), (3, "SAME")])
def test_patch_conv_transpose_is_flax_conv_transpose(kernel, padding):
    rng = np.random.default_rng(kernel)
    x = jnp.asarray(rng.standard_normal((2, 5, 4, 6)), jnp.float32)
    reference = nn.ConvTranspose(8, (kernel, kernel), strides=(kernel, kernel), padding=padding)
    ours = layers.PatchConvTranspose(8, (kernel, kernel))
    variables = reference.init(jax.random.key(1), x)
    # Same names, shapes and initial values: checkpoints of either load into the other.
    ours_init = ours.init(jax.random.key(1), x)
    assert jax.tree.structure(ours_init) == jax.tree.structure(variables)
    jax.tree.map(np.testing.assert_array_equal, ours_init, variables)
    # A non-zero bias, so a wrong broadcast would show.
    variables = jax.tree.map(lambda v: v + 0.1, variables)
    expected = reference.apply(variables, x)
    np.testing.assert_allclose(ours.apply(variables, x), expected, rtol=1e-5, atol=1e-5)
    with performance.reference_ops():
        np.testing.assert_allclose(ours.apply(variables, x), expected, rtol=1e-5, atol=1e-5)

    def grads(module):
        return jax.grad(lambda v: (module.apply(v, x) ** 2).sum())(variables)

    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4),
        grads(ours),
        grads(reference),
    )


def test_configure_xla_adds_measured_flags_once_and_respects_the_user(monkeypatch):
    monkeypatch.setattr(performance, "_backends_initialised", lambda: False)
    monkeypatch.setattr(performance, "_jaxlib_minor", lambda: "0.10")
    monkeypatch.delenv("DLLAB_CPU_FLAGS", raising=False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")
    added = performance.configure_xla()
    assert added == performance.CPU_XLA_FLAGS["0.10"]
    assert os.environ["XLA_FLAGS"].split() == ["--xla_dump_to=/tmp/x", *added]
    assert performance.configure_xla() == ()  # already there: nothing twice
    # A value the user chose wins.
    name = added[0].split("=")[0]
    monkeypatch.setenv("XLA_FLAGS", f"{name}=LIBRARY_FUSION_TYPE_DEFAULT")
    assert performance.configure_xla() == ()
    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.setenv("DLLAB_CPU_FLAGS", "0")
    assert performance.configure_xla() == ()
    assert os.environ["XLA_FLAGS"] == ""
    # An unmeasured jaxlib gets no flags (an unknown flag would abort the process).
    monkeypatch.setenv("DLLAB_CPU_FLAGS", "1")
    monkeypatch.setattr(performance, "_jaxlib_minor", lambda: "0.99")
    assert performance.configure_xla() == ()
    # Once a backend exists, XLA has read its flags: changing them would only mislead.
    monkeypatch.setattr(performance, "_jaxlib_minor", lambda: "0.10")
    monkeypatch.setattr(performance, "_backends_initialised", lambda: True)
    assert performance.configure_xla() == ()


def test_cpu_flags_known_to_this_jaxlib_parse(tmp_path):
    """The flags chosen for the installed jaxlib are ones its XLA knows (else it aborts)."""
    flags = " ".join(performance.cpu_flags())
    code = "import jax, jax.numpy as jnp; print(float(jnp.ones(3).sum()))"
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "3.0"


def test_max_pool_3x3_stride2_equals_torch_style_max_pool():
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 7, 10, 3)), jnp.float32)
    reference = lambda x: nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    np.testing.assert_array_equal(layers.max_pool_3x3_stride2(x), reference(x))
    g_ours = jax.grad(lambda x: (layers.max_pool_3x3_stride2(x) ** 2).sum())(x)
    g_ref = jax.grad(lambda x: (reference(x) ** 2).sum())(x)
    np.testing.assert_allclose(g_ours, g_ref, rtol=1e-6)


@pytest.mark.parametrize(
    "shape,kernel,strides,padding",
    [
        ((2, 3, 3, 8), (3, 3), 2, ((1, 1), (1, 1))),  # 2x2 output: patches @ kernel
        ((2, 4, 4, 8), (1, 1), 2, ((0, 0), (0, 0))),  # ResNet's strided 1x1 shortcut
        ((2, 2, 2, 8), (3, 3), 1, "SAME"),
        ((2, 3, 3, 4), (2, 2), 2, "VALID"),
        ((2, 6, 5, 4), (3, 3), 1, 1),  # a larger map: XLA's convolution
    ],
)
def test_conv_equals_flax_conv_on_every_path(shape, kernel, strides, padding):
    x = jnp.asarray(np.random.default_rng(2).standard_normal(shape), jnp.float32)
    reference = nn.Conv(6, kernel, strides=strides, padding=padding)
    ours = layers.Conv(6, kernel, strides=strides, padding=padding)
    variables = reference.init(jax.random.key(3), x)
    jax.tree.map(np.testing.assert_array_equal, ours.init(jax.random.key(3), x), variables)
    variables = jax.tree.map(lambda v: v + 0.1, variables)
    expected = reference.apply(variables, x)
    out_hw = expected.shape[1:3]
    # On the CPU, maps of at most 4 pixels take the matmul path; the rest XLA's convolution.
    assert performance.conv_as_matmul(out_hw, kernel, strides) == (out_hw[0] * out_hw[1] <= 4)
    np.testing.assert_allclose(ours.apply(variables, x), expected, rtol=1e-5, atol=1e-5)

    def grads(module):
        return jax.grad(lambda v, x: (module.apply(v, x) ** 2).sum(), argnums=(0, 1))(variables, x)

    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4),
        grads(ours),
        grads(reference),
    )
    with performance.reference_ops():
        assert not performance.conv_as_matmul(out_hw, kernel, strides)
