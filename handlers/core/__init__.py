"""The lowest layer: what every other layer uses and nothing it imports. The event and work
message types and their parsing, settings, ids and keys, the clock, bounds, errors, logging."""
