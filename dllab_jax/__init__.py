"""dllab_jax: the deep-learning lab curriculum in JAX/Flax."""

__version__ = "0.1.0"
