"""The hooks a voicews plugin may implement.

Builtin processors and users' plugins implement these the same way; there is
no other door into the processor registry.
"""

from collections.abc import Callable

import pluggy

hookspec = pluggy.HookspecMarker("voicews")


@hookspec
def register_processors(register: Callable[[type], None]) -> None:
    """Register processor classes by calling ``register(cls)`` once per class.

    ``cls`` subclasses :class:`voicews.Processor`; its ``name`` attribute is the
    name config.yaml uses in a pipeline step.
    """


@hookspec
def stop() -> object:
    """The daemon is stopping and its calls have ended (every processor's ``close`` ran).

    Return a Deferred to make the daemon wait for it before exiting (e.g. files
    still being written by a thread), or None.  Waited for at most ``drain_timeout``.
    """
