"""voicews-call: play the Vonage side of a call against any answer URL, without a phone.

The simulator does what Vonage does for an inbound call: it requests the answer
URL, reads the NCCO, posts the call's event webhooks, opens the ``connect``
endpoint's socket with the first message Vonage sends, streams audio as 20 ms
L16 frames, sends DTMF, answers ``clear``/``notify`` like Vonage's playout
buffer would, and records what the call sends back -- checking every frame's
size, because Vonage drops a call on one wrong-sized frame.

The same code is the project's test client: :func:`simulate` and
:func:`simulate_many` run calls from pytest, :func:`simulate_socket` skips the
answer webhook and opens a socket directly.  ``fast=True`` sends frames without
pacing and then waits (bounded) for the reply, so tests are quick and do not
depend on timing.
"""


from voicews.simulator.call import (
    simulate,
    simulate_call,
    simulate_calls,
    simulate_many,
    simulate_socket,
)
from voicews.simulator.socket import echo_lag
from voicews.simulator.spec import CallResult, CallSpec, SimulationError, WebhookPost

__all__ = [
    "CallResult", "CallSpec", "SimulationError", "WebhookPost", "echo_lag", "simulate",
    "simulate_call", "simulate_calls", "simulate_many", "simulate_socket",
]
