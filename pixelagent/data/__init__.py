"""PRIST-style data: the canonical record format, loaders and converters, PRIST-Synth."""
