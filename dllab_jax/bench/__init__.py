"""The benchmark suite: JAX train steps against PyTorch on the same device.

Each case times this project's own train step (the config `main.py` runs) and the train step
of a plain-PyTorch reference of the same model with the same constructor arguments and the
same parameter count (`dllab_jax.bench.torch_models`), interleaved on one device; run it with
`python -m dllab_jax.bench`.
"""
