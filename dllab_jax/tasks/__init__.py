"""Tasks: one file per experiment family (loss, metrics, evaluation, report figures).

A task class registers itself with `@registry.tasks.register("<config.task>")` in its own
module, named after it (`dllab_jax/tasks/<config.task>.py`); nothing else lists it.
"""

from __future__ import annotations

from dllab_jax import registry


def get_task(config):
    """Instantiates the task named by `config.task`."""
    return registry.tasks.get(config.task)(config)
