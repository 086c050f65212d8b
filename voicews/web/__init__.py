"""The HTTP side: Vonage's webhooks and NCCO, authentication, limits, health and metrics."""
