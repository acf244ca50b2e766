"""Representation analyses over checkpoints: CKA, RankMe, linear probes."""
