"""Checks of a customer's identity for their country, with the libraries made for each."""

from __future__ import annotations

import re
from types import ModuleType

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from stdnum import exceptions as stdnum_errors
from stdnum.de import idnr
from stdnum.es import nif
from stdnum.fr import nir
from stdnum.it import codicefiscale
from stdnum.pt import nif as pt_nif

# The personal identifier each country's registry asks for.
NATIONAL_IDS: dict[str, tuple[ModuleType, str]] = {
    "ES": (nif, "DNI/NIE"),
    "FR": (nir, "NIR (numéro de sécurité sociale)"),
    "DE": (idnr, "Steuerliche Identifikationsnummer"),
    "IT": (codicefiscale, "Codice fiscale"),
    "PT": (pt_nif, "NIF"),
}

POSTAL_CODES = {
    "ES": re.compile(r"^(0[1-9]|[1-4]\d|5[0-2])\d{3}$"),
    "FR": re.compile(r"^\d{5}$"),
    "DE": re.compile(r"^\d{5}$"),
    "IT": re.compile(r"^\d{5}$"),
    "PT": re.compile(r"^\d{4}-\d{3}$"),
}


def normalise_national_id(country: str, value: str) -> str:
    """The compact form of a valid id; ValueError naming the expected document otherwise."""
    module, label = NATIONAL_IDS[country]
    try:
        compact: str = module.validate(value)
    except stdnum_errors.ValidationError as error:
        raise ValueError(f"not a valid {label} for {country}: {error}") from None
    return compact


def normalise_phone(country: str, value: str) -> str:
    """E.164 form of a valid phone number (national numbers are read in `country`)."""
    try:
        number = phonenumbers.parse(value, country)
    except phonenumbers.NumberParseException:
        raise ValueError("not a phone number") from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError(f"not a valid phone number for {country}")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise_email(value: str) -> str:
    try:
        return validate_email(value, check_deliverability=False).normalized.lower()
    except EmailNotValidError as error:
        raise ValueError(str(error)) from None


def normalise_postal_code(country: str, value: str) -> str:
    value = value.strip().upper()
    if not POSTAL_CODES[country].match(value):
        raise ValueError(f"not a postal code of {country}")
    return value
