"""Loading models and calibration data from files (what the CLI takes)."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import torch

from .torch_import import ConversionError

__all__ = ["load_model", "load_calibration"]


def load_model(spec: str, state_dict=None) -> torch.nn.Module:
    """A model from ``model.pt2`` (torch.export), ``model.pt`` (pickled module) or ``file.py:factory``."""
    if ":" in spec and spec.split(":", 1)[0].endswith(".py"):
        file, factory_name = spec.split(":", 1)
        path = Path(file)
        if not path.is_file():
            raise ConversionError(f"{file}: no such file")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        factory = getattr(module, factory_name, None)
        if not callable(factory):
            raise ConversionError(f"{file} has no callable {factory_name!r}")
        model = factory()
        if state_dict is not None:
            model.load_state_dict(torch.load(state_dict, weights_only=True))
        return model.eval()
    path = Path(spec)
    if not path.is_file():
        raise ConversionError(f"{spec}: no such file (expected a .pt2, a .pt/.pth module or file.py:factory)")
    if state_dict is not None:
        raise ConversionError("--state-dict goes with file.py:factory")
    if path.suffix == ".pt2":
        with warnings.catch_warnings():
            # torch 2.13's own loader trips its pytree deprecation; not the user's problem.
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
            return torch.export.load(path).module()
    loaded = torch.load(path, weights_only=False)
    if isinstance(loaded, dict):
        raise ConversionError(f"{spec} holds a state dict, not a module: pass file.py:factory --state-dict {spec}")
    if not isinstance(loaded, torch.nn.Module):
        raise ConversionError(f"{spec} holds a {type(loaded).__name__}, not a torch.nn.Module")
    return loaded


def load_calibration(spec: str):
    """Raw calibration samples from a ``.npy`` or ``.pt`` file, and the default input scale (1: a model
    calibrated on a file saw raw values unless told otherwise).

    Dataset names and directories are not read here (the converter takes arrays): the flow and the
    CLI resolve them (:mod:`spikeforge.datasets`).
    """
    path = Path(spec)
    if not path.is_file():
        raise ConversionError(f"{spec}: no such file; calibration files are .npy or .pt tensors of raw samples "
                              f"(dataset names are resolved by spikeforge.convert, the flow and the CLI)")
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False), 1.0
    if path.suffix in (".pt", ".pth"):
        data = torch.load(path, weights_only=True)
        if not isinstance(data, torch.Tensor):
            raise ConversionError(f"{spec} holds a {type(data).__name__}, expected a tensor of raw samples")
        return data, 1.0
    raise ConversionError(f"{spec}: calibration files must be .npy or .pt tensors of raw samples")
