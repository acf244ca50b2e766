"""Plan-time checks of settings a job would refuse hours later, or read as something else than the user meant.

``clgrid.config.validation.check_config`` calls them, in order, after the schema has filled the defaults; each
raises a ``ConfigError`` in the one form. One module per area: ``datasets``, ``benchmarks``, ``backbones`` (open_clip,
FLAVA, torchvision, ViT), ``grid`` (sweeps, variants, buffers, the backbone's blocks), ``runs`` (methods on
backbones and benchmarks) and ``ignored`` (settings a chosen mode ignores).
"""
