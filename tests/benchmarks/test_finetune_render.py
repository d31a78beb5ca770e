"""The fine-tuning benchmark's report, rendered from the published results: the CNN's gap split by the byte-input
diagnostic."""

import copy
import json
from pathlib import Path

from benchmarks import finetune

PUBLISHED = Path(__file__).parents[2] / "benchmarks" / "results.json"


def _published() -> dict:
    return copy.deepcopy(json.loads(PUBLISHED.read_text())["sections"]["finetune"]["result"])


def test_the_cnn_gap_is_split_into_hidden_codes_and_the_input_code():
    result = _published()
    cnn = result["fmnist_cnn"]
    cnn["float_accuracy"], cnn["points"][0]["accuracy"] = 0.9133, 0.9014
    cnn["byte_input"] = {"timesteps": 2, "accuracy": 0.9101, "minutes": 7.4}
    text = finetune.render(result)
    assert "reaches 91.01 % (-0.32 points, 7.4 min)" in text
    assert "hidden layers' 2-bit codes cost 0.32 points and the T-bit input code (DESIGN.md §1) the other 0.87" in text


def test_results_without_the_diagnostic_still_render():
    result = _published()
    result["fmnist_cnn"].pop("byte_input", None)
    text = finetune.render(result)
    assert "### Fashion-MNIST CNN" in text and "Where the gap comes from" not in text
