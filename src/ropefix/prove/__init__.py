"""Proof on simulated devices: tiny models, layouts, call paths, the hypothesis search, verify and its verdicts."""
