"""twistd plugin: makes ``twistd voicews`` find the daemon (no __init__.py in this folder)."""

from twisted.application.service import ServiceMaker

voicews = ServiceMaker(
    "voicews",
    "voicews.app.tap",
    "Vonage Voice API WebSocket audio daemon (webhooks + call socket on one port)",
    "voicews",
)
