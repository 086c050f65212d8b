"""The PocketSphinx worker process: decodes the streams the daemon pins to it.

PocketSphinx holds the GIL while it decodes (four decoding threads delayed a sleeping
reactor by up to 315 ms), so the daemon runs decoders in a bounded pool of these processes
(voicews.engines.pocketsphinx), and talks to each over its stdin and stdout with small
frames (`wire`).

The daemon starts this folder as ``python -P <this folder> <settings JSON>`` (its
`__main__`) rather than with ``-m``: ``-m voicews.engines...`` would import the daemon's
whole package (Twisted, the pipeline: +27 MB and 0.18 s per worker) for nothing.  So the
modules here import only the standard library and each other at the top (numpy, soxr and
pocketsphinx come when a model or a stream is made), and none is named ``pocketsphinx``:
the real package must not be shadowed.  This file imports nothing, so the daemon's
``from voicews.engines.sphinxworker.wire import ...`` costs only the framing.

- `wire`: the frames both ends speak, and the worker's settings;
- `models`: the language model, loaded once, and the decoders that share it;
- `stream`: one call's audio, resampled, endpointed, decoded, reported;
- `worker`: one process's streams, its end of the pipes, and `main`.
"""
