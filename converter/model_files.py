"""Loading models and calibration data from files (what the CLI takes).

Every way a file can be wrong (empty, truncated, another format, a factory that raises or returns
something else, a state dict for another model) is a :class:`ConversionError` naming the file and
what is accepted: these files come from users, and a user's mistake is never a traceback.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from spikeforge.ir.network import raw_samples
from .torch_import import ConversionError

__all__ = ["load_model", "load_calibration", "MODEL_SUFFIXES"]

#: File suffixes :func:`load_model` reads (besides ``file.py:factory``).
MODEL_SUFFIXES = (".pt2", ".pt", ".pth")
_ACCEPTED = "a torch.export program (.pt2), a pickled nn.Module (.pt/.pth) or file.py:factory"


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def _check_module(model, what: str) -> torch.nn.Module:
    if not isinstance(model, torch.nn.Module):
        raise ConversionError(f"{what} is a {type(model).__name__}, not a torch.nn.Module; expected {_ACCEPTED}")
    return model


def _from_factory(spec: str, state_dict) -> torch.nn.Module:
    file, factory_name = spec.split(":", 1)
    path = Path(file)
    if not path.is_file():
        raise ConversionError(f"{file}: no such file (expected {_ACCEPTED})")
    module_spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(module_spec)
    # The user's own file: whatever it raises while it is imported is the user's error to see.
    try:
        module_spec.loader.exec_module(module)
    except Exception as error:  # noqa: BLE001 - any error of the user's code, reported with its name
        raise ConversionError(f"{file}: importing it failed ({_first_line(error)})") from None
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise ConversionError(f"{file} has no callable {factory_name!r}")
    try:
        model = factory()
    except Exception as error:  # noqa: BLE001 - the user's factory; it is called with no arguments
        raise ConversionError(f"{spec}: calling {factory_name}() failed ({_first_line(error)}); the factory is "
                              f"called with no arguments and returns the model") from None
    _check_module(model, f"what {spec} returned")
    if state_dict is not None:
        state = _torch_load(state_dict, "a state dict", weights_only=True)
        if isinstance(state, torch.nn.Module):
            state = state.state_dict()
        if not isinstance(state, dict):
            raise ConversionError(f"--state-dict {state_dict} holds a {type(state).__name__}, not a state dict "
                                  f"(torch.save(model.state_dict(), path))")
        try:
            model.load_state_dict(state)
        except (RuntimeError, KeyError, TypeError, ValueError) as error:
            lines = str(error).strip().splitlines()
            detail = " ".join(line.strip() for line in lines[:3])
            raise ConversionError(f"--state-dict {state_dict} does not fit the model {spec} makes: {detail}") \
                from None
    return model.eval()


def _torch_load(path, what: str, weights_only: bool):
    """``torch.load`` that turns an unreadable file (empty, truncated, not torch's) into a ConversionError."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: no such file (expected {what})")
    # A pickled module's class is looked up by its module name: one saved from a script in the current
    # directory is found as it would be in that script.
    added = str(Path.cwd())
    sys.path.insert(0, added)
    try:
        return torch.load(path, weights_only=weights_only)
    except (ModuleNotFoundError, AttributeError) as error:
        raise ConversionError(f"{path}: the pickled model's class cannot be found ({_first_line(error)}): run "
                              f"from the directory holding the class's source, or save a state dict and pass "
                              f"file.py:factory --state-dict {path}") from None
    except Exception as error:  # noqa: BLE001 - torch raises many kinds for a damaged file
        if weights_only and "Weights only load failed" in str(error):
            raise ConversionError(f"{path} holds more than tensors (a pickled module or other objects), expected "
                                  f"{what}; a whole pickled model is given as the model itself (.pt), a state dict "
                                  f"is saved with torch.save(model.state_dict(), path)") from None
        raise ConversionError(f"{path} is not a readable torch file ({_first_line(error)}); expected {what}") \
            from None
    finally:
        if added in sys.path:
            sys.path.remove(added)


def load_model(spec: str, state_dict=None) -> torch.nn.Module:
    """A model from ``model.pt2`` (torch.export), ``model.pt`` (pickled module) or ``file.py:factory``.

    Raises
    ------
    ConversionError
        The file is missing, empty, damaged or of another format; the factory fails or returns no
        module; the state dict does not fit the model.
    """
    spec = str(spec)
    if ":" in spec and spec.split(":", 1)[0].endswith(".py"):
        return _from_factory(spec, state_dict)
    path = Path(spec)
    if path.suffix == ".py":
        raise ConversionError(f"{spec}: name the function that makes the model, as {spec}:factory")
    if not path.is_file():
        raise ConversionError(f"{spec}: no such file (expected {_ACCEPTED})")
    if path.suffix == ".onnx":
        raise ConversionError(f"{spec}: ONNX models are not supported; export the PyTorch model with "
                              f"torch.export.save(torch.export.export(model, (example,)), 'model.pt2') or save "
                              f"it with torch.save(model, 'model.pt')")
    if path.suffix not in MODEL_SUFFIXES:
        raise ConversionError(f"{spec}: {path.suffix or 'no suffix'} is not a model file; expected {_ACCEPTED}")
    if state_dict is not None:
        raise ConversionError("--state-dict goes with file.py:factory")
    if path.suffix == ".pt2":
        if not zipfile.is_zipfile(path):      # empty, truncated or not one: say so without loading torch.export
            raise ConversionError(f"{spec} is not a readable torch.export program (not a zip archive: empty, "
                                  f"truncated or another format); write one with torch.export.save("
                                  f"torch.export.export(model, (example,)), '{path.name}')")
        try:
            with warnings.catch_warnings():
                # torch 2.13's own loader trips its pytree deprecation; not the user's problem.
                warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)",
                                        category=FutureWarning)
                return torch.export.load(path).module()
        except Exception as error:  # noqa: BLE001 - torch raises many kinds for a damaged archive
            raise ConversionError(f"{spec} is not a readable torch.export program ({_first_line(error)}); "
                                  f"write one with torch.export.save(torch.export.export(model, (example,)), "
                                  f"'{path.name}')") from None
    loaded = _torch_load(path, "a pickled nn.Module (torch.save(model, path))", weights_only=False)
    if isinstance(loaded, dict):
        raise ConversionError(f"{spec} holds a state dict, not a module: pass file.py:factory --state-dict {spec}")
    if not isinstance(loaded, torch.nn.Module):
        raise ConversionError(f"{spec} holds a {type(loaded).__name__}, not a torch.nn.Module")
    return loaded


def load_calibration(spec: str):
    """Raw calibration samples from a ``.npy`` or ``.pt`` file, and the default input scale (1: a model
    calibrated on a file saw raw values unless told otherwise).

    The samples must be raw bytes (:func:`spikeforge.ir.network.raw_samples`): values already scaled
    to 0..1, negative or above 255 are refused with the hint to save raw bytes and give the scale.
    Dataset names and directories are not read here (the converter takes arrays): the flow and the
    CLI resolve them (:mod:`spikeforge.datasets`).
    """
    path = Path(spec)
    if not path.is_file():
        raise ConversionError(f"{spec}: no such file; calibration files are .npy or .pt tensors of raw samples "
                              f"(dataset names are resolved by spikeforge.convert, the flow and the CLI)")
    if path.suffix == ".npy":
        try:
            data = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as error:
            raise ConversionError(f"{spec} is not a readable .npy array of raw samples ({_first_line(error)})") \
                from None
    elif path.suffix in (".pt", ".pth"):
        data = _torch_load(path, "a tensor of raw samples (torch.save(tensor, path))", weights_only=True)
        if not isinstance(data, torch.Tensor):
            raise ConversionError(f"{spec} holds a {type(data).__name__}, expected a tensor of raw samples")
        data = data.numpy()
    else:
        raise ConversionError(f"{spec}: calibration files must be .npy or .pt tensors of raw samples")
    if data.ndim < 2 or len(data) == 0:
        raise ConversionError(f"{spec} holds an array of shape {data.shape}; calibration files hold raw samples "
                              f"(N, ...) with N >= 1")
    return raw_samples(data, f"the calibration samples in {spec}"), 1.0
