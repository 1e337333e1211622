"""End to end on the user's own data: a CSV caption set for training and an image folder for
the zero-shot evaluation, both written by the test, under a patch backdoor."""

import json

import pytest

from fedsim.runner import load, run
from tests.data.test_data_config import write_csv_set, write_imagefolder

pytestmark = pytest.mark.slow

CONFIG = """
name = "byod"
rounds = 2
[data]
name = "csv"
path = "data/captions.csv"
[eval]
name = "imagefolder"
path = "evalset"
[model]
init = "scratch"
[clients]
num = 2
per_round = 2
batch_size = 8
[attack]
malicious = [0]
[attack.data]
target = "star"
local_epochs = 1
[attack.data.trigger]
name = "badnet"
[resources]
total_cpus = 2
"""


def test_csv_training_with_an_imagefolder_evaluation(tmp_path):
    write_csv_set(tmp_path / "data", 40)
    write_imagefolder(tmp_path / "evalset", per_class=7)
    (tmp_path / "exp.toml").write_text(CONFIG)
    cfg = load(tmp_path / "exp.toml", [])
    summary = run(cfg, tmp_path / "run", log=lambda m: None)
    rounds = [json.loads(line) for line in (tmp_path / "run" / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [1, 2]
    for r in rounds:
        assert 0 <= r["clean_accuracy"] <= 1 and 0 <= r["attack_success_rate"] <= 1
        assert set(r["retrieval"]) == {"i2t_r1", "i2t_r5", "t2i_r1", "t2i_r5"}
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["status"] == summary["status"] == "completed" and on_disk["rounds"] == 2
