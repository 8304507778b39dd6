"""Fleet-scale benchmark of the pre event against the throttling emulator: `python -m bench`."""
