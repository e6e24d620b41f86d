"""Translators from other schedulers' files into runyard.toml (`runyard import ...`)."""
