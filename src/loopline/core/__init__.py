"""Layer L0: entities, typed ids, hashing, canonical JSON, errors, the clock, events, ports.

Pure: standard library only, no I/O. Everything above may import it; it imports nothing above.
"""
