"""CL methods: one module each, registered by name; the config schema's ``method_params`` is built from them.

A method changes the one training loop (``clgrid.train``) only through the hooks of ``Method``. ``METHODS`` maps
config names to classes. Which modules hold methods is not listed here: ``clgrid.catalog.methods`` finds every module
of this package that registers one, and installed packages' ``clgrid.methods`` entry points; importing them
registers them.
"""

from __future__ import annotations

import importlib

from clgrid.catalog import methods as catalog
from clgrid.methods.base import METHODS, Method, TaskData, get_method, register

__all__ = ["METHODS", "Method", "TaskData", "get_method", "register"]


def _register_all() -> None:
    """Import every method module the catalog found; a class from an entry point registers under its name."""
    external = catalog.entry_point_classes()
    for module in catalog.modules():
        loaded = importlib.import_module(module)
        for name, (where, cls_name) in external.items():
            if where == module and name not in METHODS:
                register(name)(getattr(loaded, cls_name))


_register_all()

GENERIC_METHODS = {name: cls for name, cls in METHODS.items() if not cls.needs_clip}
"""Methods that work on every backbone (the rest need CLIP's image-text model: ``FACTS["needs_clip"]``)."""
