"""Audio: L16 sample arithmetic and sound files; imports nothing else of voicews, nor Twisted."""
