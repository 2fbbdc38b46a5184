"""Shapes of the accounts API."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from caas.accounts.models import Role


class LoginCreate(BaseModel):
    email: str = Field(max_length=254, examples=["ana.garcia@example.es"])
    password: str = Field(max_length=200, examples=["a long passphrase"])


class TokenCreate(LoginCreate):
    name: str = Field(default="phone app", max_length=100, description="Which device holds it")


class TokenRead(BaseModel):
    token: str = Field(description="Send as `Authorization: Bearer <token>`; shown only once")
    token_type: str = "bearer"


class ActivationCreate(BaseModel):
    token: str = Field(max_length=200, description="The token from the activation link")
    password: str = Field(max_length=200, description="At least 10 characters")


class ActivationResend(BaseModel):
    email: str = Field(max_length=254)


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    email: str
    full_name: str
    role: Role
    dealership_id: int | None
    language: str
