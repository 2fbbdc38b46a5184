"""Shared building blocks: settings, database, clock, money, errors, outbox, history."""
