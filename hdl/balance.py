"""Balancing on measured spikes with the cycle model's word: never a folding slower than the default one.

:func:`~spikeforge.hdl.folding.auto_folding` balances each layer alone on spike counts. On measured
counts that can lose to the default folding (balanced on the estimate): the encoder's lanes follow the
estimate, and a producer and a consumer stall each other through a FIFO where spikes bunch (a
Fashion-MNIST 784-200-100-10 balance ran 19 % slower than the default in RTL). :func:`balanced_folding`
times both with the cycle model (:func:`spikeforge.hdl.cycle_model.predict`, encoder lanes and FIFOs
included) and keeps the measured balance only when it is faster by :data:`MEASURED_BALANCE_MARGIN`.

It sits above :mod:`.folding` and :mod:`.cycle_model` (the model resolves foldings itself).
"""

from __future__ import annotations

from .cycle_model import predict
from .folding import Folding, check_membrane_banks, estimate_spikes_in, resolve_folding

__all__ = ["balanced_folding", "MEASURED_BALANCE_MARGIN"]

#: A balance on measured spike counts (no samples) replaces the default folding only when the cycle model, from those
#: counts alone, says it is this much faster: from counts (no sample data) the model cannot see where in
#: a sweep the spikes bunch, and is optimistic by a few % where the encoder's sweep nears the bottleneck
#: (Fashion-MNIST 784-200-100-10: a balance predicted as fast as the default ran 3.5 % slower in RTL).
MEASURED_BALANCE_MARGIN = 0.05


def balanced_folding(net, folding=None, *, lanes_budget=None, target_cycles=None, spikes_in=None,
                     membrane_banks: int = 2, samples=None) -> Folding:
    """:func:`~spikeforge.hdl.folding.resolve_folding`, never slower than the default folding.

    With measured ``spikes_in`` and an automatic folding for a lanes budget (``folding`` empty, no
    ``target_cycles``), the measured balance is kept only when the cycle model on the measured counts
    says it beats the default folding for the same budget by :data:`MEASURED_BALANCE_MARGIN` (a tie
    keeps the default). With ``samples`` (the raw samples ``spikes_in`` came from, or the golden model's
    result on them, as :func:`~spikeforge.hdl.cycle_model.predict` takes them) the model follows them beat
    by beat, which is exact, and the measured balance is kept whenever it is faster at all.
    Otherwise this is ``resolve_folding`` itself.

    Raises
    ------
    FoldingError
        As :func:`~spikeforge.hdl.folding.resolve_folding`.
    """
    banks = check_membrane_banks(membrane_banks)
    chosen = resolve_folding(net, folding, lanes_budget=lanes_budget, target_cycles=target_cycles,
                             spikes_in=spikes_in, membrane_banks=banks)
    if spikes_in is None or folding or target_cycles is not None:
        return chosen
    default = resolve_folding(net, None, lanes_budget=lanes_budget, membrane_banks=banks)
    if default.config() == chosen.config():
        return chosen
    basis = estimate_spikes_in(net, spikes_in) if samples is None else samples
    margin = MEASURED_BALANCE_MARGIN if samples is None else 0.0
    cycles = [predict(net, candidate, basis, membrane_banks=banks).cycles_per_sample
              for candidate in (chosen, default)]
    return chosen if cycles[0] < (1 - margin) * cycles[1] else default
