"""CL methods: one module each, registered by name; the config schema lists the same names.

A method changes the one training loop (``clgrid.train``) only through the hooks
of ``Method``. ``METHODS`` maps config names to classes.
"""

from __future__ import annotations

from clgrid.methods.base import METHODS, Method, TaskData, get_method, register

# Importing the modules registers them.
from clgrid.methods import (  # noqa: E402,F401
    agem,
    der,
    dml,
    ewc,
    gdumb,
    icarl,
    joint,
    kd_ema,
    l2_init,
    lora,
    lwf,
    masked_kd,
    naive,
    ogd,
    replay,
    si,
    wise_ft,
    zscl,
)

__all__ = ["METHODS", "Method", "TaskData", "get_method", "register"]

GENERIC_METHODS = {name: cls for name, cls in METHODS.items() if not getattr(cls, "needs_clip", False)}
"""Methods that work on every backbone (the rest need CLIP's image-text model: ``needs_clip``)."""
