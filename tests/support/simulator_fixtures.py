"""Fixtures around the Involve Asia simulator (filled in with the simulator)."""
