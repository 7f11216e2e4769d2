"""revopt's platform: configuration, resources, the source contract, extraction, data quality and
validation, publishing and revopt's own schema (migrations). It never imports ``ml`` or ``features``."""
