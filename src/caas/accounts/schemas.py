"""Shapes of the accounts API."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from caas.accounts.models import Role


class LoginCreate(BaseModel):
    """E-mail and password of an activated account."""

    email: str = Field(
        max_length=254,
        description="The account's e-mail; case and surrounding spaces do not matter",
        examples=["ana.garcia@example.es"],
    )
    password: str = Field(
        max_length=200, description="The account's password", examples=["a long passphrase"]
    )


class TokenCreate(LoginCreate):
    """E-mail and password, exchanged for a bearer token."""

    name: str = Field(
        default="phone app",
        max_length=100,
        description="Which device holds it",
        examples=["Ana's phone"],
    )


class TokenRead(BaseModel):
    """A new API token."""

    token: str = Field(
        description="Send as `Authorization: Bearer <token>`; shown only once",
        examples=["Jx1f0m3wQ6Yb9pVt2LrS8cNa5HdKeZu7GiOq4EyWnTs"],
    )
    token_type: str = Field(default="bearer", description="Always `bearer`", examples=["bearer"])


class ActivationCreate(BaseModel):
    """The customer's first password, set with the link from the activation e-mail."""

    token: str = Field(
        max_length=200,
        description="The token from the activation link; single use, expires after 72 hours "
        "by default",
        examples=["zIdIUwn8R05BcHAfL834BST8ARan1_y5JQDkVXis_wY"],
    )
    password: str = Field(
        max_length=200,
        description="The password the customer chooses: at least 10 characters",
        examples=["a long passphrase"],
    )


class ActivationResend(BaseModel):
    """Ask for a new activation link."""

    email: str = Field(
        max_length=254,
        description="The e-mail of the account to activate",
        examples=["ana.garcia@example.es"],
    )


class UserRead(BaseModel):
    """A person's account."""

    model_config = ConfigDict(from_attributes=True)

    id: int = Field(description="Database id of the account", examples=[42])
    email: str = Field(description="Login e-mail, lower case", examples=["ana.garcia@example.es"])
    full_name: str = Field(description="Name shown to others", examples=["Ana García López"])
    role: Role = Field(
        description="What the account may do: `operator` (the maker's staff), `dealer` "
        "(a salesperson of one dealership), `workshop` or `customer`"
    )
    dealership_id: int | None = Field(
        description="Database id of the salesperson's dealership; null for other roles",
        examples=[1],
    )
    language: str = Field(
        description="Language of the account's e-mails and pages (ISO 639-1)", examples=["es"]
    )
