"""Extension by convention: names in configs found through decorators in their own files.

A model, task, data source or weight format registers itself where it is defined:

    @registry.models.register("cnn")
    class CNN(nn.Module): ...

and nothing else lists it. A lookup first imports the module named after the entry
(`dllab_jax.tasks.<name>`, the common case: one family per file), and only when that does
not define it imports every module of the package once, as big_vision finds
`models.<name>`. Packages are imported lazily, so a run that never reads tfds never imports
TensorFlow and a CNN run never imports the BLIP towers.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from collections.abc import Callable
from typing import Any

from dllab_jax.errors import UserError


class Registry:
    """Names -> objects for one kind of plug-in, filled by `register` in the package's modules.

    Args:
      kind: what is registered, for messages ("model", "data source", ...).
      package: the package whose modules register entries (searched on a miss).
      config_key: the config key that names an entry, for messages ("config.model.name").
    """

    def __init__(self, kind: str, package: str, config_key: str):
        self.kind = kind
        self.package = package
        self.config_key = config_key
        self._entries: dict[str, Any] = {}
        self._all_imported = False

    def register(self, name: str) -> Callable[[Any], Any]:
        """Decorator: registers the decorated class or function under `name`."""

        def decorator(obj):
            previous = self._entries.get(name)
            # Re-importing a module (importlib.reload in a test) registers an equal object again.
            if previous is not None and _qualified_name(previous) != _qualified_name(obj):
                raise ValueError(
                    f"{self.kind} {name!r} registered twice: by {_qualified_name(previous)} "
                    f"and {_qualified_name(obj)}"
                )
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> Any:
        """Returns the entry `name`; a clear UserError listing the known names if there is none."""
        if name not in self._entries and isinstance(name, str) and name.isidentifier():
            module = f"{self.package}.{name}"
            if importlib.util.find_spec(module) is not None:
                importlib.import_module(module)
        if name not in self._entries:
            self.import_all()
        if name not in self._entries:
            raise UserError(
                f"unknown {self.kind} {name!r}; set {self.config_key} to one of {self.names()}"
            )
        return self._entries[name]

    def names(self) -> list[str]:
        """Every registered name (imports the whole package once)."""
        self.import_all()
        return sorted(self._entries)

    def import_all(self) -> None:
        """Imports every module of the package, so that every entry has registered."""
        if self._all_imported:
            return
        package = importlib.import_module(self.package)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{self.package}."):
            importlib.import_module(info.name)
        self._all_imported = True

    def __contains__(self, name: str) -> bool:
        return name in self.names()


def _qualified_name(obj) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


# The four kinds of plug-in. Each lives in its own package; see that package's docstring.
tasks = Registry("task", "dllab_jax.tasks", "config.task")
models = Registry("model", "dllab_jax.models", "config.model.name")
data_sources = Registry("data source", "dllab_jax.data.sources", "config.data.name")
weight_formats = Registry("weight format", "dllab_jax.weights", "config.init_from.format")
