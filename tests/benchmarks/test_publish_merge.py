"""Publishing one section keeps the other published sections (benchmarks.runner.merge_published)."""

from spikeforge.benchmarks.runner import merge_published


def test_publishing_one_section_keeps_the_others():
    published = {"date": "old", "command": "python -m benchmarks",
                 "sections": {"accuracy": {"date": "d1", "result": {"a": 1}},
                              "hardware": {"date": "d2", "result": {"h": 1}}}}
    run = {"date": "new", "command": "python -m benchmarks --only hardware",
           "sections": {"accuracy": {"date": "stale local copy", "result": {"a": 0}},
                        "hardware": {"date": "d3", "result": {"h": 2}}}}
    merged = merge_published(published, run, ["hardware"])
    assert merged["sections"]["hardware"] == {"date": "d3", "result": {"h": 2}}
    assert merged["sections"]["accuracy"] == {"date": "d1", "result": {"a": 1}}    # not the run's local copy
    assert merged["date"] == "new" and merged["command"].endswith("--only hardware")
    assert published["sections"]["hardware"]["date"] == "d2"                          # the input is not changed


def test_publishing_into_an_empty_folder_takes_the_run():
    run = {"date": "new", "sections": {"sweep": {"result": 1}, "finetune": {"result": 2}}}
    assert merge_published({}, run, ["sweep"])["sections"] == {"sweep": {"result": 1}}
