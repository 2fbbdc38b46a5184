"""Maintenance: the plan per model, service records by workshops, and compliance."""
