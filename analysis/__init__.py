"""The statistics layer: metrics, lifts and CIs, variance reduction, trust checks, gate.

Stands alone: imports nothing of ours and no torch, so an analyst can use it on any export.
"""
