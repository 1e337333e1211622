"""fedsim: a simulator for security research on federated contrastive (CLIP) learning, on
Flower. The command line is ``fedsim`` (``fedsim.cli``); ``fedsim.__version__`` is the
installed package's version. The Python API (``fedsim.api``) is re-exported here and loads
on first use, so ``import fedsim`` imports neither torch nor Flower::

    import fedsim
    result = fedsim.run("configs/quickstart.toml", rounds=3)
    result.summary["attack_success_rate"], result.rounds
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("fedsim")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

# fedsim.<name> → fedsim.api.<name>
_API = ("make_config", "run", "sweep", "run_sweep", "load", "load_run", "runs", "rounds", "Result")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    # (the module of ``fedsim sweep`` is fedsim.sweep_run, so fedsim.sweep is always the API's)
    if name in _API:
        from fedsim import api

        return getattr(api, name)
    raise AttributeError(f"module 'fedsim' has no attribute {name!r}")
