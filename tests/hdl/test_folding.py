"""Folding configs: validation messages, parsing, automatic balance."""

import math

import numpy as np
import pytest

from spikeforge.hdl import balance as balance_module
from spikeforge.hdl.balance import balanced_folding
from spikeforge.hdl.cycle_model import predict
from spikeforge.ir import golden
from spikeforge.ir.random_network import random_conv_network, random_network
from spikeforge.hdl.folding import (DEFAULT_LANES_BUDGET, Folding, FoldingError, auto_folding, layer_cycles,
                                    max_lanes, parse_lanes, resolve_folding, tap_choices)


@pytest.fixture
def net():
    return random_network(0, sizes=(20, 16, 9, 5))


def test_unknown_layer_is_named(net):
    with pytest.raises(FoldingError, match=r"folding names layer 'fc9', which does not exist; layers: fc1, fc2, fc3"):
        resolve_folding(net, {"fc9": 2})


@pytest.mark.parametrize("lanes", [0, 10, -1, 2.5, True])
def test_lanes_out_of_range_names_layer_and_range(net, lanes):
    with pytest.raises(FoldingError, match=rf"layer 'fc2': lanes {lanes!r} is not in 1..9 \(its out_features\)"):
        resolve_folding(net, {"fc1": 1, "fc2": lanes, "fc3": 1})


def test_missing_layer_in_full_folding(net):
    with pytest.raises(FoldingError, match="does not give lanes for layer"):
        Folding.for_network(net, {"fc1": 1})


def test_parse_lanes():
    assert parse_lanes("fc1=8, fc2=4") == {"fc1": 8, "fc2": 4}
    assert parse_lanes("conv2=32x3,fc=2") == {"conv2": "32x3", "fc": 2}
    with pytest.raises(FoldingError, match=r"lanes entry 'c=4x' is not NAME=LANES, NAME=LANESxTAPS"):
        parse_lanes("c=4x")
    with pytest.raises(FoldingError, match=r"lanes entry 'fc1:8' is not NAME=LANES"):
        parse_lanes("fc1:8")
    with pytest.raises(FoldingError, match="given twice"):
        parse_lanes("fc1=1,fc1=2")


def test_budget_is_respected_and_balanced(net):
    for budget in (3, 7, 12, 30):
        folding = auto_folding(net, lanes_budget=budget)
        assert len(folding.lanes) == 3 and folding.total_lanes() <= budget
        for layer in net.layers:     # only the fewest lanes for a chunk count are chosen
            lanes = folding[layer.name]
            assert lanes == math.ceil(layer.out_features / math.ceil(layer.out_features / lanes))
    # More lanes never make the slowest estimated layer slower.
    costs = []
    for budget in (3, 7, 12, 30):
        folding = auto_folding(net, lanes_budget=budget)
        costs.append(max(layer.in_features * 2 * math.ceil(layer.out_features / folding[layer.name])
                         for layer in net.layers))
    assert costs == sorted(costs, reverse=True)
    with pytest.raises(FoldingError, match="lanes budget 2 is too small: it needs at least 3"):
        auto_folding(net, lanes_budget=2)


def test_target_cycles(net):
    # Two banks (default): max(accumulate, sweep): 40*2=80, 30*3=90, 20*5=100
    folding = auto_folding(net, target_cycles=100, spikes_in=[40, 30, 20])
    assert folding.lanes == {"fc1": 8, "fc2": 3, "fc3": 1}
    with pytest.raises(FoldingError, match=r"target 10 cycles per sample is not reachable: layer 'fc1' needs "
                                           r"about 40 cycles"):
        auto_folding(net, target_cycles=10, spikes_in=[40, 30, 20])


def test_target_cycles_one_bank(net):
    folding = auto_folding(net, target_cycles=100, spikes_in=[40, 30, 20], membrane_banks=1)
    # accumulate + sweep (T = 4): fc1 40*2+4*2=88, fc2 30*2+4*2=68 (3 lanes: 102), fc3 20*3+3=63 (1 lane: 105)
    assert folding.lanes == {"fc1": 8, "fc2": 5, "fc3": 2}
    with pytest.raises(FoldingError, match=r"target 10 cycles per sample is not reachable: layer 'fc1' needs "
                                           r"about 44 cycles"):
        auto_folding(net, target_cycles=10, spikes_in=[40, 30, 20], membrane_banks=1)
    with pytest.raises(ValueError, match="membrane_banks must be 1 or 2"):
        auto_folding(net, target_cycles=100, membrane_banks=3)


@pytest.mark.parametrize("banks", [2, 1])
def test_partial_config_balances_the_rest(net, banks):
    folding = resolve_folding(net, {"fc1": 16}, spikes_in=[40, 30, 20], membrane_banks=banks)
    assert folding["fc1"] == 16              # fc1: 40 cycles (two banks), 40 + 4 (one bank)
    assert folding["fc2"] == 9 and folding["fc3"] == 3      # 30, 20*2 <= 40; 30+4, 20*2+2 <= 44


def test_default_is_a_budget(net):
    folding = resolve_folding(net, None)
    assert folding.total_lanes() <= min(DEFAULT_LANES_BUDGET, 30)


@pytest.fixture
def cnn():
    return random_conv_network(1, input_shape=(1, 8, 8), stack=[("conv", 4, 3, 1, 1), ("pool", 2, 2),
                                                                 ("conv", 6, (2, 3), 2, 0)], classes=3)


def test_tap_lanes_validated_by_layer(cnn, net):
    folding = Folding.for_network(cnn, {"c1": "4x3", "c3": (6, 2), "d4": 1})
    assert folding.lanes == {"c1": 4, "c3": 6, "d4": 1} and folding.taps == {"c1": 3, "c3": 2}
    assert folding.total_adders() == 12 + 12 + 1 and folding.total_lanes() == 11
    assert folding.config() == {"c1": "4x3", "c3": "6x2", "d4": 1}
    assert Folding.for_network(cnn, folding.config()) == folding
    assert resolve_folding(cnn, folding) == folding
    with pytest.raises(FoldingError, match=r"layer 'c3': tap lanes 4 is not in 1..3 \(its kernel width\)"):
        Folding.for_network(cnn, {"c1": 1, "c3": "1x4", "d4": 1})
    with pytest.raises(FoldingError, match=r"layer 'd4': tap lanes 2 given for a dense layer"):
        Folding.for_network(cnn, {"c1": 1, "c3": 1, "d4": (1, 2)})
    with pytest.raises(FoldingError, match=r"layer 'c1': lanes '4y3' is not LANES or LANESxTAPS, with or without :MEMORY"):
        Folding.for_network(cnn, {"c1": "4y3", "c3": 1, "d4": 1})


def test_tap_choices_and_estimate(cnn):
    assert tap_choices(cnn.layers[0]) == [1, 2, 3]           # 3 wide, stride 1: 3, 2 or 1 groups a row
    assert tap_choices(cnn.layers[2]) == [1, 2]              # 3 wide, stride 2: at most 2 columns a row
    spikes = [100.0] * len(cnn.layers)
    # c1: 16 pooled positions, chunks 1, window 4: sweep 16·4 + 3·16 = 112; accumulate 100·3·groups.
    assert layer_cycles(cnn, 0, 4, spikes) == 100 * 9
    assert layer_cycles(cnn, 0, 4, spikes, taps=2) == 100 * 3 * 2
    assert layer_cycles(cnn, 0, 4, spikes, taps=3) == 100 * 3


def test_balancer_takes_tap_lanes_only_when_channel_lanes_run_out(cnn):
    spikes = [50.0, 300.0, 200.0, 80.0]
    small = auto_folding(cnn, lanes_budget=6, spikes_in=spikes)
    assert small.taps == {}                                   # channel lanes first
    big = auto_folding(cnn, lanes_budget=40, spikes_in=spikes)
    assert big.taps and big.total_adders() <= 40
    for name, taps in big.taps.items():
        assert big[name] == max_lanes(cnn.layer(name))       # tap lanes only on top of all channel lanes
    fastest = max(layer_cycles(cnn, i, big[layer.name], spikes, taps=big.tap_lanes(layer.name))
                  for i, layer in enumerate(cnn.layers) if layer.kind != "maxpool2d")
    plain = auto_folding(cnn, target_cycles=fastest, spikes_in=spikes)
    assert plain == big
    with pytest.raises(FoldingError, match=r"layer 'c3' needs about .* and tap lanes = 2"):
        auto_folding(cnn, target_cycles=1, spikes_in=[1.0, 1.0, 1e6, 1.0])


class _Timed:
    def __init__(self, cycles):
        self.cycles_per_sample = cycles


@pytest.mark.parametrize("candidate_faster", [True, False])
def test_a_measured_balance_is_kept_only_when_the_model_says_it_is_faster(net, monkeypatch, candidate_faster):
    """The balancer asks the cycle model (on the measured counts) for both its measured balance and the
    default one (balanced on the estimate, same budget), and never returns the slower."""
    spikes = [200.0, 10.0, 90.0]                    # fc3 busy, fc2 idle: unlike the estimate's balance
    default = auto_folding(net, lanes_budget=12)
    calls = []

    def fake_predict(net_, folding, counts, membrane_banks=2):
        calls.append((folding.config(), list(counts), membrane_banks))
        is_default = folding.config() == default.config()
        # Faster by more than the margin, or by less (within the counts-only model's error: the default).
        return _Timed(100.0 if is_default else (90.0 if candidate_faster else 97.0))

    monkeypatch.setattr(balance_module, "predict", fake_predict)
    chosen = balanced_folding(net, lanes_budget=12, spikes_in=spikes)
    assert len(calls) == 2 and calls[0][0] != calls[1][0] and all(counts == spikes for _, counts, _ in calls)
    assert (chosen.config() != default.config()) == candidate_faster


@pytest.mark.parametrize("banks", [2, 1])
@pytest.mark.parametrize("seed", range(6))
def test_balancing_on_measured_spikes_is_never_slower_than_the_default_by_the_model(seed, banks):
    rng = np.random.default_rng(seed)
    rnet = random_network(seed, sizes=tuple(int(v) for v in rng.integers(6, 40, size=4)), timesteps=4)
    spikes = [float(layer.in_features * rng.uniform(0.05, 2.0)) for layer in rnet.layers]
    for budget in (len(rnet.layers), 8, 20):
        default = auto_folding(rnet, lanes_budget=budget, membrane_banks=banks)
        chosen = balanced_folding(rnet, lanes_budget=budget, spikes_in=spikes, membrane_banks=banks)
        assert chosen.total_adders() <= budget
        times = [predict(rnet, folding, spikes, membrane_banks=banks).cycles_per_sample
                 for folding in (chosen, default)]
        assert times[0] <= times[1], (chosen.config(), default.config(), times)


@pytest.mark.parametrize("seed", [0, 3, 7])     # 3 and 7: a measured balance 1.7-4.2 % faster (inside the margin)
def test_with_samples_the_balancer_compares_beat_by_beat_and_never_picks_a_slower_folding(seed):
    """Given the raw samples the counts came from, the model follows them beat by beat (exact): the measured
    balance is kept whenever it is faster at all, and never when it is slower."""
    rng = np.random.default_rng(seed)
    rnet = random_network(seed, sizes=tuple(int(v) for v in rng.integers(8, 40, size=4)), timesteps=4)
    samples = rng.integers(0, 256, size=(40, rnet.in_features)).astype(np.uint8)
    spikes = [float(s.mean()) for s in golden.run(rnet, samples).input_spikes()]
    for budget in (len(rnet.layers), 8, 20):
        default = auto_folding(rnet, lanes_budget=budget)
        measured = resolve_folding(rnet, None, lanes_budget=budget, spikes_in=spikes)
        chosen = balanced_folding(rnet, lanes_budget=budget, spikes_in=spikes, samples=samples)
        exact = {name: predict(rnet, folding, samples).cycles_per_sample
                 for name, folding in (("default", default), ("measured", measured))}
        expected = measured if exact["measured"] < exact["default"] else default
        assert chosen.config() == expected.config(), (exact, chosen.config())
