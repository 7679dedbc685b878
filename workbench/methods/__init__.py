"""SSL methods: a plain dict registry over :class:`~workbench.methods.base.SSLMethod`.

Add a method by writing one file with a subclass and adding it to ``METHODS`` below.
"""

from __future__ import annotations

from workbench.methods.barlow import BarlowTwins
from workbench.methods.base import Batch, MethodConfig, SSLMethod
from workbench.methods.byol import BYOL
from workbench.methods.clmex import CLMEx
from workbench.methods.contrawarping import ContraWarping
from workbench.methods.mae import MAE
from workbench.methods.mocov3 import MoCoV3
from workbench.methods.simclr import SimCLR
from workbench.methods.simfle import SimFLE
from workbench.methods.sslfer import SSLFER
from workbench.methods.vicreg import VICReg

METHODS: dict[str, type[SSLMethod]] = {
    "simclr": SimCLR,
    "byol": BYOL,
    "mocov3": MoCoV3,
    "barlow_twins": BarlowTwins,
    "mae": MAE,
    "simfle": SimFLE,
    "sslfer": SSLFER,
    "contrawarping": ContraWarping,
    "clmex": CLMEx,
    "vicreg": VICReg,
}


def get_method(name: str) -> type[SSLMethod]:
    """Look up a method class by name; a clear error with suggestions when unknown."""
    from workbench.errors import ConfigError

    key = name.strip().lower().replace("-", "_")
    if key in METHODS:
        return METHODS[key]
    import difflib

    guess = difflib.get_close_matches(key, list(METHODS), n=1)
    hint = f" (did you mean '{guess[0]}'?)" if guess else ""
    raise ConfigError(f"unknown method '{name}'{hint}; available: {', '.join(METHODS)}")


__all__ = ["METHODS", "Batch", "MethodConfig", "SSLMethod", "get_method"]
