"""HTTP delivery: the webhook sink, request signing, TLS."""
