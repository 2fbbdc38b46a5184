"""Software releases of the cars and their staged rollouts over the fleet."""
