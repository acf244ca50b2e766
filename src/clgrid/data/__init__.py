"""Datasets (a registry of names to preparers) and scenarios (task splits built from them)."""
