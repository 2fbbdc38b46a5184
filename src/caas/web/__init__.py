"""Server-rendered pages: the dealer intranet, the customer portal, operator and workshop."""
