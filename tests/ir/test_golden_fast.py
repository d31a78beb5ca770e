"""The closed form's fast engine (float BLAS, reciprocal division, narrow codes, threads): exact at its limits.

The fast engine runs whenever ``_fast_dtype`` allows (every realistic network); these tests pin its
bounds (|V| + 1 <= 2^21 in float32, <= 2^50 in float64) with potentials that hit ``kθ - 1`` and ``kθ``
right at the bound, and check that threads and chunking never change a bit.
"""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from spikeforge.ir import golden
from spikeforge.ir.errors import InputError
from spikeforge.ir.network import DenseLayer, Network
from spikeforge.ir.random_network import random_conv_network

from test_conv_golden import conv_stacks          # tests/ir is on sys.path (rootdir-less "prepend" import mode)


def _assert_same(a, b):
    assert len(a.codes) == len(b.codes)
    for x, y in zip(a.codes, b.codes):
        assert x.dtype == np.int64 and y.dtype == np.int64
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.labels, b.labels)


def _exact_engine(monkeypatch, dtype=None):
    monkeypatch.setattr(golden, "_fast_dtype", lambda net: None)
    monkeypatch.setattr(golden, "_float_dtype", lambda net: dtype)


def _ramp_network(bound: int, thresholds: list, timesteps: int = 16) -> Network:
    """One input, one hidden neuron per threshold: ``V = ±q + b`` with ``|b| = bound - code_max`` (v0 = 0),
    so the layer's accumulator bound is exactly ``bound`` and V sweeps the code_max + 1 values below it."""
    code_max = (1 << timesteps) - 1
    b = bound - code_max
    signs = [1 - 2 * (i % 5 == 4) for i in range(len(thresholds))]      # every fifth neuron: V = -q + b
    hidden = DenseLayer("fc1", weight=[[s] for s in signs], bias=[b] * len(thresholds), threshold=thresholds,
                        v0=[0] * len(thresholds), weight_bits=2, fires=True)
    out = DenseLayer("fc2", weight=np.ones((1, len(thresholds)), dtype=np.int64), bias=[0], threshold=[1], v0=[0],
                     weight_bits=2, fires=False)
    net = Network(timesteps=timesteps, input_shape=(1,), input_lut=np.zeros(256, dtype=np.int64),
                  layers=[hidden, out], classes=["a"])
    assert hidden.accumulator_bound(timesteps) == bound
    return net


def _ramp_thresholds(bound: int, code_max: int) -> list:
    """Thresholds with a multiple kθ inside the swept range [b, b + code_max] and V/θ <= code_max, so
    the quotient's integer steps are visible (not clipped); plus a few small and huge ones."""
    b = bound - code_max
    thresholds = [b // k + 1 for k in (code_max, code_max - 1, 65000, 40000, 12345, 1000, 3, 1)]   # kθ in (b, b + k]
    return thresholds + [1, 2, 7, 1 << 40, (1 << 62) + 1]


@pytest.mark.parametrize("bound, engine", [((1 << 21) - 1, np.float32), (1 << 21, np.float64),
                                           ((1 << 50) - 1, np.float64), (1 << 50, None)])
def test_fast_engine_is_exact_at_its_bounds(bound, engine):
    """|V| + 1 = 2^21 still runs in float32, 2^50 in float64; one more and the next engine takes over."""
    code_max = (1 << 16) - 1
    net = _ramp_network(bound, _ramp_thresholds(bound, code_max))
    assert golden._fast_dtype(net) is engine
    codes = np.arange(code_max + 1, dtype=np.int64)[:, None]
    potential = codes * net.layers[0].weight[:, 0] + net.layers[0].bias
    expected = np.clip(potential // net.layers[0].threshold, 0, code_max)
    for narrow in (codes, codes.astype(np.uint16)):
        result = golden.run_codes(net, narrow)
        np.testing.assert_array_equal(result.codes[1], expected)
        np.testing.assert_array_equal(result.scores[:, 0], expected.sum(axis=1))
    assert (expected > 0).any() and (expected < code_max).any()


def test_ramp_hits_multiples_of_every_visible_threshold():
    """The bound test is only as good as its potentials: V = kθ - 1 and kθ both occur."""
    code_max, bound = (1 << 16) - 1, (1 << 50) - 1
    b = bound - code_max
    for theta in _ramp_thresholds(bound, code_max)[:8]:
        k = b // theta + 1
        assert b <= k * theta - 1 and k * theta <= b + code_max and k <= code_max


@pytest.mark.parametrize("engine", ["fast32", "fast64", "exact32", "exact64", "exact-int64"])
def test_every_engine_is_exact_on_a_cnn(monkeypatch, engine):
    net = random_conv_network(7, input_shape=(2, 10, 9), stack=(("conv", 5, 3, 1, 1), ("pool", 2, 2),
                              ("conv", 6, (2, 3), (1, 2), (1, 0)), ("dense", 8)), classes=4, timesteps=6,
                              weight_bits=7, threshold_range=(50, 900))
    samples = np.random.default_rng(2).integers(0, 256, size=(40, 2, 10, 9)).astype(np.uint8)
    reference = golden.run_timesteps(net, samples)
    fast = {"fast32": np.float32, "fast64": np.float64}.get(engine)
    if fast is not None:
        assert golden._fast_dtype(net) is np.float32        # the bound allows both float types
        monkeypatch.setattr(golden, "_fast_dtype", lambda net: fast)
    else:
        _exact_engine(monkeypatch, {"exact32": np.float32, "exact64": np.float64}.get(engine))
    _assert_same(golden.run(net, samples), reference)


@pytest.mark.parametrize("timesteps, weight_bits", [(16, 2), (12, 3), (9, 2), (8, 8)])
def test_fast_engine_with_uint16_and_uint8_codes_equals_literal(timesteps, weight_bits):
    """T > 8 keeps the codes in uint16 internally; the public codes are int64 either way."""
    net = random_conv_network(3, input_shape=(1, 9, 8), stack=(("conv", 3, 2, 1, 1), ("pool", 2, 2), ("dense", 5)),
                              classes=3, timesteps=timesteps, weight_bits=weight_bits,
                              threshold_range=(1, 6), bias_range=(-40, 40))
    assert golden._fast_dtype(net) is not None
    samples = np.random.default_rng(1).integers(0, 256, size=(30, 1, 9, 8))
    samples[0], samples[1] = 0, 255
    closed, literal = golden.run(net, samples), golden.run_timesteps(net, samples)
    _assert_same(closed, literal)
    for counts, spikes in zip(literal.spike_counts, closed.input_spikes()):
        np.testing.assert_array_equal(counts.sum(axis=1), spikes)
    hidden = np.concatenate([codes.ravel() for codes in closed.codes[1:]])
    assert 255 < hidden.max() if timesteps > 8 else 0 < hidden.max()      # codes beyond uint8 occur
    assert (0 < hidden).mean() > 0.1 and (hidden < (1 << timesteps) - 1).mean() > 0.1


@settings(max_examples=25, deadline=None)
@given(spec=conv_stacks(), seed=st.integers(0, 2**32 - 1), timesteps=st.integers(1, 16),
       threads=st.integers(1, 3), n=st.integers(1, 40))
def test_threads_and_chunks_change_nothing(spec, seed, timesteps, threads, n):
    input_shape, stack, output = spec
    net = random_conv_network(seed, input_shape=input_shape, stack=stack, output=output, classes=3,
                              timesteps=timesteps, weight_bits=3, threshold_range=(1, 1 << (timesteps - 1)),
                              bias_range=(-30, 30))
    samples = np.random.default_rng(seed).integers(0, 256, size=(n,) + input_shape)
    one = golden.run(net, samples, threads=1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(golden, "_FAST_CHUNK_BYTES", 1)                    # chunks of the minimum size (8)
        many = golden.run(net, samples, threads=threads)
        patch.setattr(golden, "_fast_dtype", lambda net: None)
        exact = golden.run(net, samples)
    _assert_same(many, one)
    _assert_same(exact, one)


def test_threads_must_be_a_positive_integer():
    net = random_conv_network(0)
    for bad in (0, -1, 1.5, "2"):
        with pytest.raises(InputError, match=f"threads {bad!r} must be an integer >= 1"):
            golden.run(net, np.zeros((2, 8, 8), dtype=np.uint8), threads=bad)


def test_an_empty_batch_runs():
    net = random_conv_network(0)
    result = golden.run(net, np.zeros((0, 8, 8), dtype=np.uint8))
    assert result.scores.shape == (0, 3) and [c.shape for c in result.codes] == [(0, f) for f in
                                                                              [64] + [l.out_features for l in net.hidden_layers]]
