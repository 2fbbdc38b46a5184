"""E-mails and in-app messages, with templates per language, sent through the outbox."""
