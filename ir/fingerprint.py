"""A network's identity: SHA-256 fingerprints that outputs record and tools compare before trusting them.

A generated design (``design.json``) and a board build (``report.json``) record the fingerprints of
the network they were made from (``network.fingerprint`` and ``network.structure_fingerprint``).
``spikeforge verify``, ``report --design`` and ``patch-weights`` compare them with the network they
are given *before* doing anything, so RTL made from another network is never signed off.

Two fingerprints, each the SHA-256 (hex) of a canonical serialisation:

:func:`fingerprint`
    Everything that defines the arithmetic: T, the amplification k, the input shape, the input
    lookup table, every layer's kind, name, shapes and window (kernel, stride, padding), weight
    width and ``fires``, every array's shape *and values* (weight, bias, threshold, v0) and the
    class names. Two networks with equal fingerprints classify every sample identically, and a
    design made from one is a design of the other. The free-form ``calibration`` record (how the
    network was made) is left out: it changes no result. Layer and class names are in: they name
    the design's ROMs, foldings and outputs, and a network renamed is a different network to a user.
:func:`structure_fingerprint`
    The same serialisation without the arrays' values (their shapes stay in): what hardware of
    fixed size and widths depends on. ``patch-weights`` puts another network's weights into a
    built bitstream; the two networks must share this fingerprint (and, checked separately
    there, the small ROMs and logic that are not patched: input table, biases, thresholds).

The serialisation is independent of how the network was stored: arrays are hashed as
little-endian int64 in a fixed order, the header as JSON with sorted keys; a network saved and
loaded again has the same fingerprints. :data:`SCHEME` names the serialisation and is hashed too:
a future change of it changes every fingerprint rather than colliding with an old one.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from .errors import InputError
from .network import MaxPool2dLayer, Network

__all__ = ["SCHEME", "fingerprint", "structure_fingerprint", "identity", "check_identity"]

#: The name and version of the canonical serialisation (part of what is hashed).
SCHEME = "spikeforge-network-identity/1"

_ARRAYS = ("weight", "bias", "threshold", "v0")


def _header(net: Network) -> dict:
    layers = []
    for layer in net.layers:
        entry = {"name": layer.name, "kind": layer.kind, "in_shape": list(layer.in_shape),
                 "out_shape": list(layer.out_shape)}
        for key in ("kernel", "stride", "padding"):
            if hasattr(layer, key):
                entry[key] = [int(v) for v in getattr(layer, key)]
        if not isinstance(layer, MaxPool2dLayer):
            entry["weight_bits"] = int(layer.weight_bits)
            entry["fires"] = bool(layer.fires)
            entry["arrays"] = {key: list(np.shape(getattr(layer, key))) for key in _ARRAYS}
        layers.append(entry)
    return {"scheme": SCHEME, "timesteps": int(net.timesteps), "amplification": int(net.amplification),
            "input_shape": list(net.input_shape), "input_lut": list(np.shape(net.input_lut)),
            "classes": list(net.classes), "layers": layers}


def _digest(net: Network, values: bool) -> str:
    header = _header(net)
    header["part"] = "all" if values else "structure"
    digest = hashlib.sha256(json.dumps(header, sort_keys=True, separators=(",", ":")).encode())
    if values:
        digest.update(b"\0input_lut\0")
        digest.update(np.ascontiguousarray(net.input_lut, dtype="<i8").tobytes())
        for layer in net.linear_layers:
            for key in _ARRAYS:
                digest.update(f"\0{layer.name}.{key}\0".encode())
                digest.update(np.ascontiguousarray(getattr(layer, key), dtype="<i8").tobytes())
    return digest.hexdigest()


def fingerprint(net: Network) -> str:
    """SHA-256 (64 hex digits) over everything that defines ``net``'s arithmetic (see the module docstring)."""
    return _digest(net, values=True)


def structure_fingerprint(net: Network) -> str:
    """SHA-256 over ``net``'s structure: :func:`fingerprint` without the arrays' values (shapes kept)."""
    return _digest(net, values=False)


def identity(net: Network) -> dict:
    """``{"fingerprint": ..., "structure_fingerprint": ...}``: what outputs record of their network."""
    return {"fingerprint": fingerprint(net), "structure_fingerprint": structure_fingerprint(net)}


def check_identity(recorded, net: Network, *, what: str, where, network_path=None, structure_only: bool = False,
                   remedy: str = "regenerate it with `spikeforge generate`", error=InputError) -> None:
    """Refuse an output (``what`` at ``where``) made from another network than ``net`` (from ``network_path``).

    ``recorded`` is the output's ``network`` record (a dict holding ``fingerprint`` and
    ``structure_fingerprint``; ``None`` or a dict without them for outputs of an older spikeforge,
    which are refused too: their network cannot be checked). With ``structure_only``, only the
    structures must agree. Raises ``error`` (an :class:`InputError` subclass) whose message names
    both fingerprints (first 12 hex digits) and both paths; returns ``None`` when they agree.
    """
    key = "structure_fingerprint" if structure_only else "fingerprint"
    given = network_path if network_path is not None else "the network given"
    stored = recorded.get(key) if isinstance(recorded, dict) else None
    if not isinstance(stored, str) or not stored:
        raise error(f"{what} {where} records no network {key.replace('_', ' ')} (written by an older spikeforge), "
                    f"so it cannot be checked against {given}: {remedy}")
    actual = structure_fingerprint(net) if structure_only else fingerprint(net)
    if stored != actual:
        source = recorded.get("path")
        origin = f" ({source})" if source else ""
        if structure_only:
            raise error(f"{what} {where} was made from a network of structure {stored[:12]}{origin}, not that of "
                        f"{given} (structure {actual[:12]}): their structures (layers, sizes, widths, T, "
                        f"classes) differ; {remedy}")
        raise error(f"{what} {where} was made from network {stored[:12]}{origin}, not from {given} (network "
                    f"{actual[:12]}): their fingerprints differ; {remedy}, or give the network it was made from")
