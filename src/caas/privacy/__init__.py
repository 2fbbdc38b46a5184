"""The customer's consent to keep more of their car's data than the service needs."""
