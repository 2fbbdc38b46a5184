"""Wire contracts shared with the outside world (factory, registries, payment provider, cars).

`caas_sim` imports only this package from `caas`, so a simulator speaks exactly the contract
a real counterpart would.
"""
