"""A processor plugin that is not built in: ``invert`` turns the audio it passes upside
down, handing back int32 (the pipeline saturates it: -(-32768) comes out as 32767).

The plugin tests load it from a config-listed file and as an installed package's module."""

from voicews import Processor, hookimpl


class Invert(Processor):
    name = "invert"

    def process(self, inbound, outbound):
        return None if outbound is None else -outbound.astype("int32")


@hookimpl
def register_processors(register):
    register(Invert)
