"""API keys: admins create them (the key is in the answer, once) and revoke any; everyone
lists and revokes their own."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query

from db import auth as db_auth
from db.models import ApiKey, User
from service import auth
from service.api.auth import AdminIdentity, CurrentIdentity
from service.api.deps import SessionDep
from service.api.views import key_public
from service.schemas import INVALID, NOT_FOUND, KeyCreate, KeyCreated, KeyPublic, KeysPublic

router = APIRouter(prefix="/keys", tags=["keys"])


@router.get("", responses=NOT_FOUND | INVALID)
def read_keys(
    identity: CurrentIdentity,
    session: SessionDep,
    user: str | None = Query(None, max_length=200, description="admins: one user's keys"),
    revoked: bool = Query(False, description="include revoked keys"),
) -> KeysPublic:
    """Admins see every key (or one user's); others their own."""
    owner: User | None
    if identity.user is not None and not identity.has("admin"):
        owner = identity.user
    elif user is not None:
        owner = db_auth.get_user(session=session, name=user)
        if owner is None:
            raise HTTPException(404, f"user {user!r} not found")
    else:
        owner = None
    keys = db_auth.list_keys(session=session, user=owner, include_revoked=revoked)
    return KeysPublic(data=[KeyPublic(**key_public(k)) for k in keys], count=len(keys))


@router.post("", status_code=201, responses=NOT_FOUND | INVALID)
def create_key(body: KeyCreate, identity: AdminIdentity, session: SessionDep) -> KeyCreated:
    """A new key of a user. The answer holds the key; it is stored only as a hash, so this
    is the one time anyone sees it."""
    user = db_auth.get_user(session=session, name=body.user)
    if user is None:
        raise HTTPException(404, f"user {body.user!r} not found")
    key, token = auth.create_key(
        session=session,
        user=user,
        name=body.name,
        actor=identity.actor,
        key_prefix=identity.key_prefix,
    )
    session.commit()  # acknowledged means committed
    return KeyCreated(**key_public(key), key=token)


def get_key(
    prefix: Annotated[
        str, Path(max_length=64, description="the key's prefix: pb_ and 8 characters")
    ],
    session: SessionDep,
    identity: CurrentIdentity,
) -> ApiKey:
    """The key with that prefix: any for an admin; only your own for others (404 for the
    rest, which tells nothing about other users' keys)."""
    key = db_auth.get_key(session=session, prefix=prefix)
    mine = identity.user is None or identity.has("admin")
    if key is not None and identity.user is not None:
        mine = mine or key.user_id == identity.user.id
    if key is None or not mine:
        raise HTTPException(404, f"key {prefix} not found")
    return key


KeyDep = Annotated[ApiKey, Depends(get_key)]


@router.post("/{prefix}/revoke", responses=NOT_FOUND | INVALID)
def revoke_key(key: KeyDep, identity: CurrentIdentity, session: SessionDep) -> KeyPublic:
    """Revoke a key at once (its page sessions end too). Revoking a revoked key changes
    nothing and answers the same."""
    auth.revoke_key(session=session, key=key, actor=identity.actor, key_prefix=identity.key_prefix)
    session.commit()
    return KeyPublic(**key_public(key))
