"""voicews: answer Vonage Voice API calls and process their live audio over WebSockets.

The public API for processor plugins lives here: ``hookimpl`` to mark hook
implementations, ``Processor`` to subclass, and the ``Session``, ``Event``,
``CallInfo``, ``Playback`` and ``PrepareContext`` types a processor meets.  Importing it is
light (numpy, pluggy and Twisted's core): no web framework, no metrics library.
"""

__version__ = "0.2.0"

from voicews.hookspecs import hookimpl  # noqa: E402
from voicews.pipeline.events import Event  # noqa: E402
from voicews.pipeline.info import CallInfo  # noqa: E402
from voicews.pipeline.playback import Playback  # noqa: E402
from voicews.pipeline.processor import PrepareContext, Processor  # noqa: E402
from voicews.pipeline.session import Session  # noqa: E402

__all__ = [
    "CallInfo", "Event", "Playback", "PrepareContext", "Processor", "Session", "__version__",
    "hookimpl",
]
