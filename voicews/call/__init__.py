"""The call socket: where a frame enters (the read loop, the protocol) and the call watchdog."""
