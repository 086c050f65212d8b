"""voicews: answer Vonage Voice API calls and process their live audio over WebSockets.

The public API for processor plugins lives here: `hookimpl` to mark hook
implementations, `Processor` to subclass, and the `Session` and `Event` types a
processor receives.
"""

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("voicews")

from voicews.pipeline.events import Event  # noqa: E402
from voicews.pipeline.processor import PrepareContext, Processor  # noqa: E402
from voicews.pipeline.session import Session  # noqa: E402

__all__ = ["Event", "PrepareContext", "Processor", "Session", "__version__", "hookimpl"]
