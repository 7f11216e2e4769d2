"""Sample data: the synthetic store generator (with its ground truth), seeding, and importers of real
public data sets (UCI Online Retail)."""
