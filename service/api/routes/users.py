"""Users of the team, and the caller's own identity. Managing users is for admins."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi import Path as PathParam

from db import auth as db_auth
from db.models import User
from service import auth
from service.api.auth import AdminIdentity, CurrentIdentity, auth_on
from service.api.deps import SessionDep, SettingsDep
from service.schemas import (
    CONFLICT,
    INVALID,
    NOT_FOUND,
    IdentityPublic,
    UserCreate,
    UserPublic,
    UsersPublic,
    UserUpdate,
)

router = APIRouter(tags=["users"])


@router.get("/me")
def read_me(
    identity: CurrentIdentity, request: Request, settings: SettingsDep, session: SessionDep
) -> IdentityPublic:
    """Who this request comes from, and whether the service requires keys."""
    return IdentityPublic(
        auth=auth_on(request, settings, session),
        user=identity.name,
        role=identity.role,
        via=identity.via,
        key_prefix=identity.key_prefix,
    )


@router.get("/users")
def read_users(_: AdminIdentity, session: SessionDep) -> UsersPublic:
    """The team's users. Admins only."""
    users = db_auth.list_users(session=session)
    return UsersPublic(data=[UserPublic.model_validate(u) for u in users], count=len(users))


@router.post("/users", status_code=201, responses=CONFLICT | INVALID)
def create_user(body: UserCreate, identity: AdminIdentity, session: SessionDep) -> UserPublic:
    """A team user (409 if one has the name; a legacy user of that name is adopted)."""
    user = auth.create_user(
        session=session,
        name=body.name,
        role=body.role,
        actor=identity.actor,
        key_prefix=identity.key_prefix,
    )
    session.commit()  # acknowledged means committed
    return UserPublic.model_validate(user)


def get_user(
    name: Annotated[str, PathParam(description="the user's name")], session: SessionDep
) -> User:
    user = db_auth.get_user(session=session, name=name)
    if user is None:
        raise HTTPException(404, f"user {name!r} not found")
    return user


UserDep = Annotated[User, Depends(get_user)]


@router.patch("/users/{name}", responses=NOT_FOUND | CONFLICT | INVALID)
def update_user(
    body: UserUpdate, identity: AdminIdentity, user: UserDep, session: SessionDep
) -> UserPublic:
    """Change a user's role, or disable (enable) it: its keys stop (start) working at once.
    The last enabled admin cannot be demoted or disabled (409)."""
    try:
        auth.update_user(
            session=session,
            user=user,
            role=body.role,
            disabled=body.disabled,
            actor=identity.actor,
            key_prefix=identity.key_prefix,
        )
    except auth.LastAdminError as e:
        raise HTTPException(409, str(e)) from e
    session.commit()
    return UserPublic.model_validate(user)
