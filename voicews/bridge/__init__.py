"""Below the ``bridge`` processor: the far end's protocols (Twilio Media Streams, Vonage's
own) as pure state machines, and the WebSocket client that carries them."""
