"""The floor of the house: the integer spiking network, its on-disk format and its meaning.

* :mod:`.network` — the IR (:class:`~.network.Network` and its layers) and the format of DESIGN §2;
* :mod:`.golden` — the golden model: closed form and literal timesteps (DESIGN §1);
* :mod:`.amplification` — the same neuron with any amplification factor k (the paper's k-sweep);
* :mod:`.errors` — the one error tree every folder raises from;
* :mod:`.atomic` — atomic outputs (temporary name, then rename) for every folder that writes files.

It imports nothing else of spikeforge; every other folder may import it.
"""
