"""The application: ``twistd voicews`` (tap), the service that assembles the parts, logs."""
