"""Board lookup by name, and what each FPGA family's free toolchain and device offer.

``icebreaker`` and ``ulx3s-85f`` are the supported boards; any amaranth-boards platform is found by
its class name (``ICEBreakerPlatform``) or a loose spelling of it (``ulx3s_45f``, ``arty-a7-35``:
case, ``-`` and ``_`` and a trailing ``Platform`` do not matter).
"""

import importlib
import pkgutil
import re
from dataclasses import dataclass

from amaranth.vendor import LatticePlatform, SiliconBluePlatform

from spikeforge.ir.errors import InputError

__all__ = ["BoardError", "BoardInfo", "find_platform", "board_info", "DEVICES", "SUPPORTED_BOARDS",
           "DEFAULT_BAUD", "START_CLOCK_MHZ"]

#: Boards built and tested in CI.
SUPPORTED_BOARDS = {"icebreaker": "ICEBreakerPlatform", "ulx3s-85f": "ULX3S_85F_Platform"}

#: Link speed when ``--baud`` is not given: what the board's USB-serial bridge runs reliably and the
#: board clock divides exactly (FT2232H on the iCEBreaker, FT231X on the ULX3S).
DEFAULT_BAUD = {"ICEBreakerPlatform": 1_000_000, "ULX3S_85F_Platform": 1_000_000}
FALLBACK_BAUD = 115200

#: Where the clock search starts (MHz), per FPGA family: an upper bound for this accelerator (the first
#: placement, made at this target, gives the Fmax the next try goes just below).
START_CLOCK_MHZ = {"ice40": 48.0, "ecp5": 150.0}


class BoardError(InputError):
    """An unknown board, or one this flow cannot build for."""


@dataclass(frozen=True)
class Device:
    """Capacity of one FPGA, in the units yosys and nextpnr report."""
    family: str
    logic: int          # iCE40: logic cells (LUT4 + FF); ECP5: LUT4s
    flip_flops: int
    block_rams: int     # iCE40: 4 kbit EBRs; ECP5: 18 kbit DP16KD
    block_ram_bits: int
    dsps: int
    sprams: int = 0     # iCE40 UltraPlus: 16,384 x 16-bit single-port RAMs (SB_SPRAM256KA)


DEVICES = {
    "iCE40UP5K": Device("ice40", 5280, 5280, 30, 4096, 8, 4),
    "iCE40UP3K": Device("ice40", 2800, 2800, 20, 4096, 4, 4),
    "iCE40HX8K": Device("ice40", 7680, 7680, 32, 4096, 0),
    "iCE40HX4K": Device("ice40", 3520, 3520, 20, 4096, 0),
    "iCE40HX1K": Device("ice40", 1280, 1280, 16, 4096, 0),
    "iCE40LP8K": Device("ice40", 7680, 7680, 32, 4096, 0),
    "iCE40LP1K": Device("ice40", 1280, 1280, 16, 4096, 0),
    "LFE5U-12F": Device("ecp5", 12288, 12288, 32, 18432, 28),
    "LFE5U-25F": Device("ecp5", 24288, 24288, 56, 18432, 28),
    "LFE5U-45F": Device("ecp5", 43848, 43848, 108, 18432, 72),
    "LFE5U-85F": Device("ecp5", 83640, 83640, 208, 18432, 156),
    "LFE5UM-25F": Device("ecp5", 24288, 24288, 56, 18432, 28),
    "LFE5UM-45F": Device("ecp5", 43848, 43848, 108, 18432, 72),
    "LFE5UM-85F": Device("ecp5", 83640, 83640, 208, 18432, 156),
    "LFE5UM5G-25F": Device("ecp5", 24288, 24288, 56, 18432, 28),
    "LFE5UM5G-45F": Device("ecp5", 43848, 43848, 108, 18432, 72),
    "LFE5UM5G-85F": Device("ecp5", 83640, 83640, 208, 18432, 156),
}


@dataclass(frozen=True)
class BoardInfo:
    """What the build flow needs to know about a platform class."""
    name: str               # the platform class name
    platform_class: type
    family: str             # "ice40", "ecp5", or the vendor family for other boards
    toolchain: str          # the amaranth toolchain name
    free: bool              # buildable here with YoWASP
    device: Device | None
    clock_hz: float
    default_baud: int
    #: The clock search's first target (Hz): :data:`START_CLOCK_MHZ`, or the board clock.
    start_clock_hz: float = 0.0


def _key(name: str) -> str:
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    return key[:-len("platform")] if key.endswith("platform") else key


_INDEX = None


def _platform_index() -> dict:
    global _INDEX
    if _INDEX is None:
        try:
            import amaranth_boards      # an optional dependency (the boards extra)
        except ImportError:     # pragma: no cover - depends on the install
            raise BoardError("amaranth-boards is not installed: pip install 'spikeforge[boards]'") from None
        index = {}
        for info in pkgutil.iter_modules(amaranth_boards.__path__):
            if info.name.startswith("_") or info.name in ("resources", "extensions", "test"):
                continue
            try:
                module = importlib.import_module(f"amaranth_boards.{info.name}")
            except Exception:   # a board module with a broken optional import: skip it
                continue
            for attr in getattr(module, "__all__", ()):
                cls = getattr(module, attr, None)
                if isinstance(cls, type) and attr.endswith("Platform"):
                    index[_key(attr)] = cls
        _INDEX = index
    return _INDEX


def find_platform(name: str) -> type:
    """The amaranth-boards platform class for ``name``.

    Raises
    ------
    BoardError
        Naming the board and listing the supported ones.
    """
    if not isinstance(name, str) or not name:
        raise BoardError(f"board {name!r} is not a name")
    key = _key(SUPPORTED_BOARDS.get(name.lower(), name))
    index = _platform_index()
    if key not in index:
        close = sorted(k for k in index if key[:4] and k.startswith(key[:4]))
        hint = f"; similar: {', '.join(close[:8])}" if close else ""
        raise BoardError(f"unknown board {name!r}; supported: {', '.join(SUPPORTED_BOARDS)}, or any "
                         f"amaranth-boards platform class name ({len(index)} known, e.g. "
                         f"ICEBreakerPlatform, ULX3S_85F_Platform, ArtyA7_35Platform){hint}")
    return index[key]


def board_info(name: str) -> BoardInfo:
    cls = find_platform(name)
    platform = cls()
    if isinstance(platform, SiliconBluePlatform):
        family = "ice40"
    elif isinstance(platform, LatticePlatform):
        family = getattr(platform, "family", "lattice")
    else:
        vendor = next((c for c in type(platform).__mro__ if c.__module__.startswith("amaranth.vendor")), None)
        family = (vendor or type(platform)).__name__.removesuffix("Platform").lower()
    toolchain = getattr(platform, "toolchain", "?")
    free = (family == "ice40" and toolchain == "IceStorm") or (family == "ecp5" and toolchain == "Trellis")
    clock_hz = platform.default_clk_frequency if platform.default_clk else 0.0
    return BoardInfo(name=cls.__name__, platform_class=cls, family=family, toolchain=toolchain, free=free,
                     device=DEVICES.get(getattr(platform, "device", None)) if free else None,
                     clock_hz=float(clock_hz), default_baud=DEFAULT_BAUD.get(cls.__name__, FALLBACK_BAUD),
                     start_clock_hz=START_CLOCK_MHZ.get(family, 0.0) * 1e6 or float(clock_hz))
