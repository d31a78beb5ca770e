"""PLL dividers for the board clock: ECP5 ``EHXPLLL`` and iCE40 ``SB_PLL40_PAD``, computed in Python.

The searches follow Project Trellis ``ecppll`` and IceStorm ``icepll`` (same divider ranges, same
frequency limits, same preference among equally close settings), in exact rational arithmetic:

* **ECP5** (``ecppll``): ``f_pfd = f_in / CLKI_DIV`` (3.125-400 MHz), ``f_out = f_pfd * CLKFB_DIV``
  (feedback from CLKOP), ``f_vco = f_out * CLKOP_DIV`` (400-800 MHz); CLKI_DIV 1..128, CLKFB_DIV
  1..80, CLKOP_DIV 1..128; output 10-400 MHz, input 8-400 MHz. Among equally close outputs the VCO
  nearest 600 MHz wins, then the smallest dividers. ``CLKOP_CPHASE`` is ``CLKOP_DIV // 2`` (the
  180° shift ecppll writes; its single-precision arithmetic sometimes lands one lower, which is the
  same clock up to phase).
* **iCE40** (``icepll``, SIMPLE feedback): ``f_pfd = f_in / (DIVR + 1)`` (10-133 MHz), ``f_vco =
  f_pfd * (DIVF + 1)`` (533-1066 MHz), ``f_out = f_vco / 2**DIVQ``; DIVR 0..15, DIVF 0..127, DIVQ
  1..6; output 16-275 MHz, input 10-133 MHz. FILTER_RANGE from ``f_pfd`` as icepll sets it.

``nearest`` (what the tools do, and ``spikeforge build --clock``) takes the closest output;
``at_most`` takes the fastest output not above the target (the clock search: a frequency that met
timing must not be rounded up).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from fractions import Fraction

from spikeforge.ir.errors import InputError

__all__ = ["PLLError", "PLLSettings", "ecp5_pll", "ice40_pll", "pll_for", "output_range", "PLL_FAMILIES"]

MHZ = 1_000_000


class PLLError(InputError):
    """A clock the device PLL cannot make from the board oscillator."""


@dataclasses.dataclass(frozen=True)
class _Limits:
    primitive: str
    input_mhz: tuple
    pfd_mhz: tuple
    vco_mhz: tuple
    output_mhz: tuple


_LIMITS = {
    "ecp5": _Limits("EHXPLLL", (8, 400), (Fraction(3125, 1000), 400), (400, 800), (10, 400)),
    "ice40": _Limits("SB_PLL40_PAD", (10, 133), (10, 133), (533, 1066), (16, 275)),
}
#: FPGA families whose PLL this module computes.
PLL_FAMILIES = tuple(_LIMITS)


@dataclasses.dataclass(frozen=True)
class PLLSettings:
    """One PLL configuration.

    Attributes
    ----------
    family, primitive : str
        ``ecp5`` / ``EHXPLLL`` or ``ice40`` / ``SB_PLL40_PAD``.
    input_hz, requested_hz, output_hz, vco_hz, pfd_hz : float
        The oscillator, the asked-for clock, the clock the PLL makes (what the design runs at), the
        VCO and the phase detector frequencies.
    dividers : dict
        The primitive's divider parameters by name (``CLKI_DIV``, ``CLKFB_DIV``, ``CLKOP_DIV``,
        ``CLKOP_CPHASE``; or ``DIVR``, ``DIVF``, ``DIVQ``, ``FILTER_RANGE``).
    """
    family: str
    primitive: str
    input_hz: float
    requested_hz: float
    output_hz: float
    vco_hz: float
    pfd_hz: float
    dividers: dict

    @property
    def output_mhz(self) -> float:
        return self.output_hz / MHZ

    def to_json(self) -> dict:
        return {"primitive": self.primitive, "input_mhz": self.input_hz / MHZ,
                "requested_mhz": self.requested_hz / MHZ, "output_mhz": self.output_hz / MHZ,
                "vco_mhz": self.vco_hz / MHZ, "pfd_mhz": self.pfd_hz / MHZ, **self.dividers}

    def describe(self) -> str:
        """``EHXPLLL 25 MHz -> 100 MHz (VCO 600 MHz; CLKI_DIV 1, CLKFB_DIV 4, CLKOP_DIV 6)``."""
        dividers = ", ".join(f"{k} {v}" for k, v in self.dividers.items())
        return (f"{self.primitive} {self.input_hz / MHZ:g} MHz -> {self.output_hz / MHZ:.4g} MHz "
                f"(VCO {self.vco_hz / MHZ:.4g} MHz; {dividers})")


def _check(value, name: str) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, (int, float, Fraction)) or not math.isfinite(value) \
            or value <= 0:
        raise PLLError(f"PLL {name} {value!r} must be a finite frequency > 0 (Hz)")
    return Fraction(value)


def _within(value: Fraction, bounds_mhz) -> bool:
    low, high = bounds_mhz
    return low * MHZ <= value <= high * MHZ


def _candidates_ecp5(clkin: Fraction):
    """Every (output, vco, pfd, dividers) the ECP5 PLL makes from ``clkin``, the best CLKOP_DIV for each
    (CLKI_DIV, CLKFB_DIV): the one that puts the VCO nearest 600 MHz, the smaller on a tie."""
    limits = _LIMITS["ecp5"]
    low_vco, high_vco = (v * MHZ for v in limits.vco_mhz)
    for clki_div in range(1, 129):
        pfd = clkin / clki_div
        if not _within(pfd, limits.pfd_mhz):
            continue
        for clkfb_div in range(1, 81):
            out = pfd * clkfb_div
            if not _within(out, limits.output_mhz):
                continue
            first, last = max(1, math.ceil(low_vco / out)), min(128, math.floor(high_vco / out))
            if first > last:
                continue
            ideal = Fraction(600 * MHZ) / out
            clkop_div = min(range(max(first, math.floor(ideal)), min(last, math.ceil(ideal)) + 1) or [first, last],
                            key=lambda d: (abs(out * d - 600 * MHZ), d))
            yield out, out * clkop_div, pfd, {"CLKI_DIV": clki_div, "CLKFB_DIV": clkfb_div, "CLKOP_DIV": clkop_div,
                                             "CLKOP_CPHASE": clkop_div // 2}


def _filter_range(pfd: Fraction) -> int:
    mhz = pfd / MHZ
    return 1 if mhz < 17 else 2 if mhz < 26 else 3 if mhz < 44 else 4 if mhz < 66 else 5 if mhz < 101 else 6


def _candidates_ice40(clkin: Fraction):
    """Every (output, vco, pfd, dividers) the iCE40 PLL makes from ``clkin`` in SIMPLE feedback, in
    icepll's loop order."""
    limits = _LIMITS["ice40"]
    for divr in range(16):
        pfd = clkin / (divr + 1)
        if not _within(pfd, limits.pfd_mhz):
            continue
        for divf in range(128):
            vco = pfd * (divf + 1)
            if not _within(vco, limits.vco_mhz):
                continue
            for divq in range(1, 7):
                out = vco / 2 ** divq
                if _within(out, limits.output_mhz):
                    yield out, vco, pfd, {"DIVR": divr, "DIVF": divf, "DIVQ": divq,
                                          "FILTER_RANGE": _filter_range(pfd)}


_GENERATORS = {"ecp5": _candidates_ecp5, "ice40": _candidates_ice40}


@functools.lru_cache(maxsize=16)
def _candidates(family: str, clkin: Fraction) -> tuple:
    """(output, vco, pfd as floats, dividers, exact output) of every setting; floats rank them quickly."""
    return tuple((float(out), float(vco), float(pfd), dividers, out)
                 for out, vco, pfd, dividers in _GENERATORS[family](clkin))


def output_range(family: str, input_hz: float) -> tuple:
    """The slowest and fastest clock (Hz) the ``family`` PLL makes from ``input_hz``."""
    clkin = _input(family, input_hz)
    outputs = [c[4] for c in _candidates(family, clkin)]
    return float(min(outputs)), float(max(outputs))


def _input(family: str, input_hz) -> Fraction:
    if family not in _LIMITS:
        raise PLLError(f"FPGA family {family!r} has no PLL computation here; supported: {', '.join(_LIMITS)}")
    clkin = _check(input_hz, "input frequency")
    low, high = _LIMITS[family].input_mhz
    if not _within(clkin, _LIMITS[family].input_mhz):
        raise PLLError(f"{_LIMITS[family].primitive}: input clock {float(clkin) / MHZ:g} MHz is outside "
                       f"{low:g}-{high:g} MHz")
    return clkin


def pll_for(family: str, input_hz: float, target_hz: float, *, at_most: bool = False, accept=None) -> PLLSettings:
    """The PLL settings of ``family`` (``ecp5`` or ``ice40``) that make ``target_hz`` from ``input_hz``.

    ``at_most=False`` takes the closest output (as ecppll/icepll do); ``at_most=True`` the fastest
    output not above ``target_hz``. ``accept`` (a predicate on the output frequency in Hz) leaves out
    outputs the design cannot use (a UART baud rate the clock does not divide closely enough).

    Raises
    ------
    PLLError
        An unknown family, an input the PLL does not take, or a target outside what it makes (the
        message names the frequency and the achievable range).
    """
    clkin = _input(family, input_hz)
    target = _check(target_hz, "target frequency")
    limits = _LIMITS[family]
    candidates = _candidates(family, clkin)
    low, high = min(c[4] for c in candidates), max(c[4] for c in candidates)
    span = f"{float(low) / MHZ:.4g}-{float(high) / MHZ:.4g} MHz"
    if accept is not None:
        candidates = [c for c in candidates if accept(c[0])]
    if at_most:
        ceiling = target * (1 + Fraction(1, 10**12))    # a float round trip of an output stays that output
        candidates = [c for c in candidates if c[4] <= ceiling]
        if not candidates:
            raise PLLError(f"{limits.primitive}: no clock at or below {float(target) / MHZ:g} MHz can be made from "
                           f"{float(clkin) / MHZ:g} MHz" + (" that the design accepts" if accept else "")
                           + f"; achievable: {span}")
    elif not candidates:
        raise PLLError(f"{limits.primitive}: no clock from {float(clkin) / MHZ:g} MHz is accepted by the design; "
                       f"achievable: {span}")
    elif not low * (1 - Fraction(1, 10**12)) <= target <= high * (1 + Fraction(1, 10**12)):
        raise PLLError(f"{limits.primitive}: {float(target) / MHZ:g} MHz cannot be made from {float(clkin) / MHZ:g} "
                       f"MHz; achievable: {span}")
    goal = float(target)
    if family == "ecp5":    # closest, then VCO nearest 600 MHz, then the loop order (smallest dividers)
        key = lambda c: (abs(c[0] - goal), abs(c[1] - 600 * MHZ), c[3]["CLKI_DIV"], c[3]["CLKFB_DIV"])
    else:                   # icepll keeps the first of equally close settings
        key = lambda c: abs(c[0] - goal)
    out, vco, pfd, dividers, _ = min(candidates, key=key)
    return PLLSettings(family=family, primitive=limits.primitive, input_hz=float(clkin), requested_hz=float(target),
                       output_hz=float(out), vco_hz=float(vco), pfd_hz=float(pfd), dividers=dividers)


def ecp5_pll(input_hz: float, target_hz: float, *, at_most: bool = False, accept=None) -> PLLSettings:
    """:func:`pll_for` on ECP5 (``EHXPLLL``)."""
    return pll_for("ecp5", input_hz, target_hz, at_most=at_most, accept=accept)


def ice40_pll(input_hz: float, target_hz: float, *, at_most: bool = False, accept=None) -> PLLSettings:
    """:func:`pll_for` on iCE40 (``SB_PLL40_PAD``, SIMPLE feedback)."""
    return pll_for("ice40", input_hz, target_hz, at_most=at_most, accept=accept)
