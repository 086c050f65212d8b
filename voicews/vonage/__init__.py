"""What Vonage speaks, as data: the socket's messages and close codes, signed tokens."""
