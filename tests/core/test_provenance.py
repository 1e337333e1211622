"""fedsim.provenance and ``fedsim --version``: what a run records about where it was measured
(issue #24): versions, commit, CPU model and vector flags, threads, engine."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import fedsim
from fedsim.provenance import cpu_model, git_commit, provenance, vector_flags

XEON = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu vme sse4_1 sse4_2 avx avx2 fma avx512f avx512bw bmi2
processor\t: 1
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu vme sse4_1 sse4_2 avx avx2 fma avx512f avx512bw bmi2
"""
GRAVITON = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics sve
CPU implementer\t: 0x41
Model\t: Neoverse-V1
"""


def test_cpu_model_and_vector_flags_from_x86_and_arm_cpuinfo():
    assert cpu_model(XEON) == "Intel(R) Xeon(R) Processor"
    # only the vector units, in VECTOR_FLAGS' order, each once although every core lists them
    assert vector_flags(XEON) == ["sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw"]
    assert cpu_model(GRAVITON) == "Neoverse-V1"
    assert vector_flags(GRAVITON) == ["asimd", "sve"]
    assert vector_flags("") == []


def test_git_commit_names_this_checkout_or_nothing(tmp_path):
    assert git_commit(tmp_path) is None  # not a checkout
    commit = git_commit()
    if commit is not None:  # a source checkout (CI's clean clone is one)
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=fedsim.__path__[0]).stdout.strip()
        assert commit.removesuffix("+dirty") == head


def test_provenance_records_software_cpu_threads_and_engine():
    import torch

    p = provenance(engine="inprocess", client_threads=2, server_threads=3)
    assert p["torch"] == torch.__version__ and p["python"].count(".") == 2
    assert p["fedsim"] == fedsim.__version__ or fedsim.__version__ == "0+unknown"
    assert (p["engine"], p["client_threads"], p["server_threads"]) == ("inprocess", 2, 3)
    assert p["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert p["cpu"] and isinstance(p["cpu_flags"], list)
    json.dumps(p)  # summary.json must hold it


def test_a_finished_run_records_its_provenance_in_summary_json_and_md(tmp_path):
    from fedsim.app.recorder import finish
    from fedsim.config import load_config
    from fedsim.report import RunDirectory

    d = RunDirectory(tmp_path / "run")
    d.append_round({"round": 1, "clean_accuracy": 0.5, "attack_success_rate": 0.1})
    finish(d, load_config(None, ["rounds=1", "resources.client_threads=2"]), initial=None, wall_s=1.0,
           engine="ray")
    made = json.loads((tmp_path / "run" / "summary.json").read_text())["provenance"]
    assert (made["engine"], made["client_threads"]) == ("ray", 2)
    md = (tmp_path / "run" / "summary.md").read_text()
    assert "Measured with:" in md and "engine ray" in md and f"torch {made['torch']}" in md


def test_version_on_the_command_line(capsys):
    from fedsim.cli import main

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"fedsim {fedsim.__version__}"
    out = subprocess.run([sys.executable, "-c", "import fedsim; print(fedsim.__version__)"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == fedsim.__version__
