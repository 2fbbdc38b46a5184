"""Over-the-air configuration: signing keys, manifest building and signing, publishing, acks."""
