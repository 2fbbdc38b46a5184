"""The connected car, simulated: one car (`agent`), many in one loop (`fleet`), their screens
and local key endpoint (`screen`). Each car is a real MQTT client with its own credentials."""

from caas_sim.vehicle.agent import BrokerEndpoint, CarIdentity, VehicleAgent
from caas_sim.vehicle.fleet import Fleet, FleetFile, ProvisionedCar

__all__ = ["BrokerEndpoint", "CarIdentity", "Fleet", "FleetFile", "ProvisionedCar", "VehicleAgent"]
