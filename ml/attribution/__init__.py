"""Multi-touch attribution: heuristic and data-driven credit of each order to the channels on its path."""
