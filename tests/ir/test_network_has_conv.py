"""Network.has_conv: true when any layer is a conv2d."""

from spikeforge.ir.random_network import random_conv_network, random_network


def test_has_conv_is_false_for_a_dense_network_and_true_with_a_conv_layer():
    assert random_network(0).has_conv is False
    assert random_conv_network(0).has_conv is True
    assert random_conv_network(0, stack=(("conv", 4, 3, 1, 1), ("dense", 6))).has_conv is True
