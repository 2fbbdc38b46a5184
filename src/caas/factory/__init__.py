"""The Factory Order API client (placing orders) and the receiver of its stage events."""
