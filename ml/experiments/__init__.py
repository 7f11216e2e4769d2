"""Experiments: assignment of units to variants and the statistics that analyse them."""
