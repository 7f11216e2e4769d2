"""Personalisation: customer affinity, segments and next best action (issue 19)."""
