"""Torch-free facts the DAG plans with, each declared beside the code it describes.

The Snakefile, the config checks and ``clgrid.resources`` read methods', backbones' and metrics' facts from here; the
facts themselves are literals in the method's or backbone's own module, read from its source without importing it
(``clgrid.catalog.declared``), so planning never imports torch.

- ``declared``: reads a module's literal declarations (``PARAMS``, ``FACTS``) from its source, with its classes' bases.
- ``methods``: every method (clgrid's modules that register one, and installed packages' ``clgrid.methods`` entry
  points): names, hyperparameters (the schema's ``method_params`` is built from them), facts, docs.
"""
