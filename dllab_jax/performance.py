"""The one place where speed choices are made: XLA:CPU flags and op formulations.

Measured on the 2-core development CPU (jaxlib 0.10.2; `python -m dllab_jax.bench
--suite=offline`, README "Performance"):

- XLA:CPU hands most convolutions to YNNPACK by default, and YNNPACK is slower there than
  XLA's own Eigen convolutions: `--xla_cpu_experimental_ynn_fusion_type=
  LIBRARY_FUSION_TYPE_REDUCE` keeps YNNPACK for reductions only (0.73-0.91x step time on the
  convolutional defaults; 1.04x on SegFormer, which is matmul-bound).
- A program that runs once (a model's initialisation) is compiled at LLVM optimisation
  level 1 instead of 2 (`jit_run_once`): a small SegFormer's init compiles in 15 s instead of
  30 s, bit-identical (level 0 compiles in 11 s but moves some values by one float32 ulp,
  which would change every recorded run).
- Two formulations in `dllab_jax.models.layers` (2x2 max-pool as reshape + max; transposed
  convolutions with kernel == stride as a matmul + depth-to-space) avoid XLA:CPU's slow
  reduce-window gradient and input-dilated weight-gradient convolution, on every backend.

Overrides: `DLLAB_CPU_FLAGS=0` leaves XLA_FLAGS as the user set them (flags the user already
set always win); `DLLAB_REFERENCE_OPS=1` (or `with reference_ops():` before tracing) makes
the models use flax's own `nn.max_pool` / `nn.ConvTranspose` lowering. Both change speed only:
the parameters and the function computed stay the same.
"""

from __future__ import annotations

import contextlib
import os
import sys

# XLA:CPU flags per jaxlib minor version they were measured on. An unknown flag in XLA_FLAGS
# aborts the process, and XLA renames experimental flags between releases, so a version we
# have not checked gets none.
CPU_XLA_FLAGS = {
    "0.10": ("--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_REDUCE",),
}

_reference_ops = os.environ.get("DLLAB_REFERENCE_OPS", "0") == "1"


def use_reference_ops() -> bool:
    """Whether models trace flax's own ops instead of `dllab_jax.models.layers`' forms."""
    return _reference_ops


@contextlib.contextmanager
def reference_ops(enabled: bool = True):
    """Within the block, newly traced models use flax's own ops (jit caches what it traced)."""
    global _reference_ops
    previous, _reference_ops = _reference_ops, enabled
    try:
        yield
    finally:
        _reference_ops = previous


# Output maps up to this many pixels run as patches @ kernel on the CPU (dllab_jax.models.
# layers.Conv): measured fwd+bwd on 2 cores, 3x3 convs at batch 128 -- 2x2x256 output 12x
# faster as a matmul, 1x1x512 2.4x; 4x4x128 1.3x slower, 8x8x64 3x slower.
MATMUL_CONV_MAX_PIXELS = 4


def conv_as_matmul(out_hw, kernel_size, strides) -> bool:
    """Whether `layers.Conv` runs a convolution as one matrix product (see there)."""
    if _reference_ops:
        return False
    import jax

    if jax.default_backend() != "cpu":
        return False  # cuDNN and TPU convolutions have no such slow path
    del kernel_size, strides  # measured: 1x1 and patchifying convs gain nothing (0.8-1.7x)
    return out_hw[0] * out_hw[1] <= MATMUL_CONV_MAX_PIXELS


def _jaxlib_minor() -> str | None:
    try:
        from importlib.metadata import version

        return ".".join(version("jaxlib").split(".")[:2])
    except Exception:
        return None


def cpu_flags() -> tuple[str, ...]:
    """The XLA:CPU flags chosen for the installed jaxlib (none for an unmeasured one)."""
    return CPU_XLA_FLAGS.get(_jaxlib_minor() or "", ())


def configure_xla() -> tuple[str, ...]:
    """Adds the chosen XLA:CPU flags to XLA_FLAGS; returns the flags added.

    Must run before JAX creates its backends (XLA reads XLA_FLAGS once); main.py and the
    benchmark call it first thing. A flag the user already set is left as they set it.
    """
    if os.environ.get("DLLAB_CPU_FLAGS", "1") == "0":
        return ()
    if "jax" in sys.modules and _backends_initialised():
        return ()
    current = os.environ.get("XLA_FLAGS", "")
    set_names = {f.split("=", 1)[0] for f in current.split()}
    added = tuple(f for f in cpu_flags() if f.split("=", 1)[0] not in set_names)
    if added:
        os.environ["XLA_FLAGS"] = " ".join([*current.split(), *added])
    return added


def _backends_initialised() -> bool:
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge._backends)
    except Exception:  # private API moved: assume the worst, change nothing
        return True


# XLA DebugOptions for programs that run once: fewer LLVM passes, which take most of
# XLA:CPU's compile time. Measured only on CPU, so other backends compile as usual.
RUN_ONCE_COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}


def jit_run_once(fn, **jit_kwargs):
    """`jax.jit(fn, **jit_kwargs)` for a function called once or twice per process with the
    same shapes (a model's initialisation): on CPU compiled with fewer LLVM passes, to the
    same values. The compiled program is kept per argument signature."""
    import jax
    import numpy as np

    jitted = jax.jit(fn, **jit_kwargs)
    compiled = {}

    def call(*args):
        key = str(jax.tree.map(lambda x: (np.shape(x), str(x.dtype)), args))
        if key not in compiled:
            lowered = jitted.lower(*args)
            options = RUN_ONCE_COMPILER_OPTIONS if jax.default_backend() == "cpu" else None
            compiled[key] = lowered.compile(compiler_options=options)
        return compiled[key](*args)

    return call
