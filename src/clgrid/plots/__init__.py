"""Tables and figures from the per-run metrics files (pandas + seaborn)."""
