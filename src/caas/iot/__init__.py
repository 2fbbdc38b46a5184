"""The IoT network: the MQTT broker, each car's credentials and what each account may touch."""
