"""Registering the car with the authority of the customer's country: one adapter per country."""
