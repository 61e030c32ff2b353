"""Callbacks: `ProgressiveUnfreeze` (what trains when) and `PhaseTimer` (what it cost)."""
