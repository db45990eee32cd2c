"""The relay service: configuration, the relay, its ingest server, the command line, the demo."""
