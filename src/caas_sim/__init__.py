"""Simulators of the world outside the maker: factory, registries, payment provider, mail, cars.

Each is a real server speaking the same wire protocol as the real counterpart, and imports
nothing from `caas` but `caas.protocol`.
"""
