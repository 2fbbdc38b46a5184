"""The customer's file ("expediente"): purchases, manuals, maintenance, invoices, timeline."""
