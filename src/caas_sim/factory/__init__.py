"""The factory simulator: accepts orders over the Factory Order API v1 and reports each
manufacturing stage to the platform as a signed webhook."""

from caas_sim.factory.app import create_app

__all__ = ["create_app"]
