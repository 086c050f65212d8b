"""Speech engines: voice activity detection, recognizers and text-to-speech.

Plain, tested engines with no knowledge of calls or pipelines: the ``vad``, ``transcribe``
and ``say`` processors wrap them, and a plugin may offer another engine with the same
interface (a cloud recognizer or voice).  They import only ``voicews.audio`` (plus numpy and
Twisted), so they can be used and measured on their own.
"""
