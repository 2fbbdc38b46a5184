"""The digital twin: the car's identity from the production line on, and its history."""
