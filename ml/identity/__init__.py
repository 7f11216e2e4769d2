"""Identity resolution: probabilistic matching of duplicate accounts and stitching identifiers into people (issue 20)."""
