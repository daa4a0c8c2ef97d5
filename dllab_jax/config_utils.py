"""Config files as specs: "configs/<name>.py[:preset]" -> ConfigDict, and run naming."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import ml_collections

from dllab_jax.errors import UserError

REPO_ROOT = Path(__file__).resolve().parent.parent


def split_spec(spec: str) -> tuple[str, str]:
    """'configs/x.py:a,b' -> ('configs/x.py', 'a,b')."""
    path, _, arg = spec.partition(":")
    return path, arg


def load_config(spec: str) -> ml_collections.ConfigDict:
    """Loads `get_config(arg)` from a config file spec, as `config_flags` does.

    A relative path is tried from the working directory, then from the repository root.
    """
    path, arg = split_spec(spec)
    candidates = [Path(path), REPO_ROOT / path]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise UserError(f"config file {path!r} not found (looked in . and {REPO_ROOT})")
    module_spec = importlib.util.spec_from_file_location(f"_config_{found.stem}", found)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    config = module.get_config(arg) if arg else module.get_config()
    config.lock()
    return config


def default_workdir(spec: str) -> str:
    """checkpoints/<config name>[-<preset>], e.g. checkpoints/classification-cifar10-vit."""
    path, arg = split_spec(spec)
    name = Path(path).stem
    if arg:
        name += "-" + arg.replace(",", "-").replace("/", "_")
    return str(Path("checkpoints") / name)


def parse_preset(arg: str | None, known: dict[str, str]) -> list[str]:
    """Splits 'a,b' into names and checks them against `known` {name: what it does}."""
    names = [n for n in (arg or "").split(",") if n]
    unknown = [n for n in names if n not in known]
    if unknown:
        listing = "; ".join(f"{k}: {v}" for k, v in known.items())
        raise UserError(f"unknown preset {unknown} in the config argument; known: {listing}")
    return names
