"""Customers, sales with their commercial plan, and the order's state machine."""
