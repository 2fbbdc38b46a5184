"""Transport of the registered car to the customer's address, and the hand-over."""
