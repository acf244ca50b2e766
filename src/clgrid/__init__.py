"""clgrid: continual-learning studies as one Snakemake DAG over an installable package."""

__version__ = "0.1.0"
