"""fedsim: a simulator for security research on federated contrastive (CLIP) learning, on
Flower. The command line is ``fedsim`` (``fedsim.cli``); ``fedsim.__version__`` is the
installed package's version."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("fedsim")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
