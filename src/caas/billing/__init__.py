"""Payments through the provider, invoices with gap-free numbers and VAT, and their PDFs."""
