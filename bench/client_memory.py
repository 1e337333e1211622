"""Peak memory of a client process against the size of the whole train split.

A client decodes only its own partition's images (``fedsim.app.build._partition``), so its
peak RSS must stay flat when the train split grows and the partition does not. For each train
size N this writes a CSV caption set of N images (64×64 PNG) to a temporary folder, and in a
fresh Python process per measurement builds client 0 as a Flower worker would (N/200 clients,
so every partition holds 200 samples) and reports its peak RSS (``ru_maxrss``). For contrast,
the same process materialising the whole split — what every client did before the lazy
loaders — is measured too.

    python bench/client_memory.py [--sizes 2000 20000] [--out bench/results/client_memory.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PER_CLIENT = 200

CHILD = r"""
import json, resource, sys
from fedsim.app.build import _partition, _model
from fedsim.app.data_plan import source_splits
from fedsim.runner import load
path, n, whole = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "whole"
cfg = load(path, [])
_, preprocess, _ = _model(cfg.model.name)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if whole:
    data = source_splits(cfg)[0].materialize(preprocess.image_size)
else:
    data = _partition(cfg.model_dump_json(), 0, preprocess.image_size)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"samples": len(data.captions), "baseline_mib": before / 1024, "peak_mib": peak / 1024}))
"""


def write_set(folder: Path, n: int) -> None:
    from PIL import Image

    (folder / "img").mkdir(parents=True)
    rows = ["image,caption"]
    for i in range(n):
        Image.new("RGB", (64, 64), ((37 * i) % 256, (91 * i) % 256, (13 * i) % 256)).save(folder / "img" / f"{i}.png")
        rows.append(f"img/{i}.png,picture {i}")
    (folder / "captions.csv").write_text("\n".join(rows) + "\n")


def config(folder: Path, n: int) -> Path:
    path = folder / "exp.toml"
    path.write_text(
        f'[data]\nname = "csv"\npath = "captions.csv"\ntrain_size = {n}\nroot_size = 0\n'
        f'[model]\ninit = "scratch"\n[clients]\nnum = {n // PER_CLIENT}\nper_round = 1\n'
        '[attack]\nenabled = false\n[eval]\nname = "imagefolder"\npath = "eval"\n'
    )
    from PIL import Image

    for name in ("star", "cat"):
        (folder / "eval" / name).mkdir(parents=True)
        Image.new("RGB", (64, 64)).save(folder / "eval" / name / "0.png")
    return path


def measure(path: Path, n: int, whole: bool) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(path), str(n), "whole" if whole else "client"],
                         cwd=ROOT, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"measuring failed:\n{out.stderr}")
    out = out.stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "client_memory.json"))
    args = parser.parse_args(argv)
    rows = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            t0 = time.perf_counter()
            write_set(folder, n)
            path = config(folder, n)
            client, whole = measure(path, n, False), measure(path, n, True)
            rows.append({"train_size": n, "clients": n // PER_CLIENT, "client": client, "whole_split": whole,
                         "seconds": round(time.perf_counter() - t0, 1)})
            print(f"train_size {n:6d}: client 0 ({client['samples']} samples) peak {client['peak_mib']:.0f} MiB; "
                  f"whole split ({whole['samples']} samples) {whole['peak_mib']:.0f} MiB", flush=True)
    result = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "python": platform.python_version(),
              "date": time.strftime("%Y-%m-%d"), "per_client": PER_CLIENT, "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
