"""The documentation: the site builds with warnings as errors, its generated reference pages
are current, the README stays a first screen whose links and config example work."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_the_generated_reference_pages_are_current():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_docs.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_site_builds_with_warnings_as_errors(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "reference" / "config" / "index.html").is_file()
    page = (tmp_path / "site" / "reference" / "catalogue" / "index.html").read_text()
    assert "multi_krum" in page and "neurotoxin" in page


def test_every_config_key_is_in_the_generated_reference():
    from fedsim.config import Config

    page = (ROOT / "docs" / "reference" / "config.md").read_text()
    for key in ("rounds", "strategy.server_lr", "attack.data.poison_rate", "defense.cleanclip.min_pairs",
                "resources.client_threads"):
        assert f"| `{key}` |" in page, key
    assert set(Config.model_fields) <= {k.split(".")[0] for k in re.findall(r"^\| `([^`]+)` \|", page, flags=re.M)}


def test_the_readme_is_a_first_screen_and_its_links_resolve():
    assert len(README.splitlines()) <= 300
    for target in re.findall(r"\]\(([^)#\s]+)\)", README):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), target


def test_the_readmes_ten_line_config_validates(tmp_path):
    from fedsim.runner import load

    block = re.search(r"```toml\n(.*?)```", README, flags=re.S).group(1)
    assert len(block.strip().splitlines()) <= 10
    config = tmp_path / "my.toml"
    config.write_text(block.replace('"configs/quickstart.toml"', f'"{ROOT / "configs" / "quickstart.toml"}"'))
    cfg = load(config)
    assert (cfg.rounds, cfg.strategy.name, cfg.attack.data.trigger.name) == (5, "multi_krum", "blended")


# The pages' code examples: every TOML block parses, every Python block compiles, and every
# documented `fedsim ...` command line parses with the real command-line parser (its
# subcommand and options exist).
PAGES = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]


def _blocks(lang: str):
    for page in PAGES:
        for block in re.findall(rf"```{lang}\n(.*?)```", page.read_text(), flags=re.S):
            yield page, block


def test_every_toml_example_parses():
    import tomllib

    found = 0
    for page, block in _blocks("toml"):
        tomllib.loads(block)
        found += 1
    assert found >= 10


def test_every_python_example_compiles():
    found = 0
    for page, block in _blocks("python"):
        compile(block, str(page), "exec")
        found += 1
    assert found >= 3


def test_every_documented_fedsim_command_parses():
    import shlex

    from fedsim.cli import build_parser

    parser = build_parser()
    commands = 0
    for page, block in _blocks("(?:bash|sh)"):
        for line in block.splitlines():
            line = line.split(" #")[0].strip()
            if not line.startswith("fedsim ") or "…" in line or "..." in line:
                continue
            argv = shlex.split(line)[1:]
            try:
                parser.parse_args(argv)
            except SystemExit as e:
                raise AssertionError(f"{page.name}: {line!r} does not parse") from e
            commands += 1
    assert commands >= 6
