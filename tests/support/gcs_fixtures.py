"""Fixtures around the GCS emulator (filled in with the sinks)."""
