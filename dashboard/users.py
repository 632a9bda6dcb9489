"""Operator accounts and the operator audit trail, in the collector's database.

Accounts: a name, an argon2id password hash, a role and a scope. Roles are ordered, each can do
what the ones before it can: ``viewer`` (looks), ``operator`` (acts on gates, lists, alerts),
``admin`` (also manages accounts and reads everyone's audit trail). The scope says which lots and
which inspection stations a user may see: every one (stored as ``*``) or a list of ids; it applies
to every role alike, so an account is never wider than what it says.

Every action an operator takes — and every refusal — is one row of the audit trail: when, who,
what, on what, from which address, and how it ended (``ok``, ``failed``, ``denied``). The
inspection alerts keep their own step-by-step trail (``cloud.intruders.AuditRow``); this one is
about people using the dashboard and the ``parkgate users`` command.

Sessions: :meth:`User.get_id` carries a fingerprint of the password hash, so changing a password
(or disabling the account) ends every session opened with the old one.

The tables are made by Alembic revision 0005 (``cloud/migrations``); ``UserStore(url)`` brings the
schema up to date first, like ``EventStore``.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, cast, get_args

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import Boolean, DateTime, Index, Integer, String, Text, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from cloud.events_store import Base, open_engine
from protocol.messages import utc_now
from protocol.topics import ID_PATTERN

logger = logging.getLogger(__name__)

Role = Literal["viewer", "operator", "admin"]
ROLES: tuple[Role, ...] = get_args(Role)  # in order: each role can do what the ones before it can
Result = Literal["ok", "failed", "denied"]
ALL = "*"  # scope: every lot (or station)

NAME_RE = re.compile(r"^[\w.@-]{1,64}$")  # \w: letters of any script, so 王伟 is a fine login name
ID_RE = re.compile(ID_PATTERN)
PASSWORD_MIN = 10
PASSWORD_MAX = 1024  # argon2 hashes any length; refuse megabyte "passwords" before hashing them
LIMITS = {"user": 64, "action": 40, "target": 200, "detail": 400, "ip": 64}


# -- errors -----------------------------------------------------------------------------------------
class UsersError(Exception):
    """Base of this module's errors."""


class BadUserInput(UsersError, ValueError):
    """A name, role, scope or password that cannot be used; the message says why."""


class UserExists(UsersError, ValueError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"user {name!r} already exists")


class UnknownUser(UsersError, LookupError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no user {name!r}")


class LoginRefused(UsersError, PermissionError):
    """Wrong name or password, or a disabled account. ``reason`` is for the audit trail only: the
    person at the login form is told the same thing in every case."""

    def __init__(self, name: str, reason: Literal["unknown_user", "wrong_password", "inactive"]) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"login refused for {name!r}: {reason}")


class RoleRequired(UsersError, PermissionError):
    def __init__(self, user: User, role: Role) -> None:
        self.user = user
        self.role = role
        super().__init__(f"{user.name} is {user.role}; this needs {role}")


# -- tables -----------------------------------------------------------------------------------------
class UserRow(Base):
    __tablename__ = "operators"
    __table_args__ = (Index("operators_name", "name", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(10))  # viewer | operator | admin
    lots: Mapped[str] = mapped_column(Text, default=ALL)  # "*" or comma-separated lot ids
    stations: Mapped[str] = mapped_column(Text, default=ALL)  # "*" or comma-separated station ids
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AuditRow(Base):
    """One action (or refusal) by one person, in the order they happened."""

    __tablename__ = "operator_audit"
    __table_args__ = (Index("operator_audit_user", "username", "id"), Index("operator_audit_ts", "ts"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    username: Mapped[str] = mapped_column(String(64))  # as typed, for a failed login of no account
    action: Mapped[str] = mapped_column(String(40))  # login, logout, user.add, note, access, ...
    target: Mapped[str] = mapped_column(String(200))  # what it was done to: a lot, a user, a path
    detail: Mapped[str] = mapped_column(String(400))
    ip: Mapped[str] = mapped_column(String(64))
    result: Mapped[str] = mapped_column(String(10))  # ok | failed | denied


# -- what callers get back --------------------------------------------------------------------------
@dataclass(frozen=True)
class User:
    """An account as the dashboard uses it; also what Flask-Login keeps as ``current_user``."""

    id: int
    name: str
    role: Role
    lots: frozenset[str] | None  # None: every lot
    stations: frozenset[str] | None  # None: every station
    active: bool
    created_at: datetime
    last_login_at: datetime | None
    session_key: str  # fingerprint of the password hash: a new password ends old sessions

    # Flask-Login's user interface
    @property
    def is_active(self) -> bool:
        return self.active

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def is_anonymous(self) -> bool:
        return False

    def get_id(self) -> str:
        return f"{self.id}:{self.session_key}"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "lots": sorted(self.lots) if self.lots is not None else ALL,
            "stations": sorted(self.stations) if self.stations is not None else ALL,
            "active": self.active,
            "created_at": self.created_at.isoformat(),
            "last_login_at": self.last_login_at.isoformat() if self.last_login_at else None,
        }


@dataclass(frozen=True)
class AuditRecord:
    id: int
    ts: datetime
    user: str
    action: str
    target: str
    detail: str
    ip: str
    result: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "ts": self.ts.isoformat(), "user": self.user, "action": self.action,
            "target": self.target, "detail": self.detail, "ip": self.ip, "result": self.result,
        }  # fmt: skip


# -- scopes and roles (pure) ------------------------------------------------------------------------
def role_at_least(user: User, role: Role) -> bool:
    return ROLES.index(user.role) >= ROLES.index(role)


def require_role(user: User, role: Role) -> None:
    """Raise :class:`RoleRequired` unless ``user`` has ``role`` or a higher one."""
    if not role_at_least(user, role):
        raise RoleRequired(user, role)


def can_see_lot(user: User, lot_id: str) -> bool:
    return user.lots is None or lot_id in user.lots


def can_see_station(user: User, station_id: str) -> bool:
    return user.stations is None or station_id in user.stations


def parse_scope(value: str | Iterable[str] | None, what: str) -> frozenset[str] | None:
    """``None``, ``"*"`` or ``["*"]``: every one; else ids, as a comma-separated string or a list."""
    if value is None:
        return None
    items = [x.strip() for x in (value.split(",") if isinstance(value, str) else value)]
    items = [x for x in items if x]
    if items == [ALL]:
        return None
    if not items:
        raise BadUserInput(f"{what}: give '*' for all, or one or more ids")
    bad = [x for x in items if not ID_RE.match(x)]
    if bad:
        raise BadUserInput(f"{what}: {bad[0]!r} is not an id (letters, digits, '_', '.', '-'; 1-64)")
    return frozenset(items)


def _scope_text(scope: frozenset[str] | None) -> str:
    return ALL if scope is None else ",".join(sorted(scope))


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise BadUserInput(f"user name {name!r}: 1-64 letters, digits, '_', '.', '@' or '-'")
    return name


def check_role(role: str) -> Role:
    if role not in ROLES:
        raise BadUserInput(f"role {role!r}: one of {', '.join(ROLES)}")
    return cast(Role, role)


def check_password(password: str, name: str = "") -> str:
    if len(password) < PASSWORD_MIN:
        raise BadUserInput(f"password too short: at least {PASSWORD_MIN} characters")
    if len(password) > PASSWORD_MAX:
        raise BadUserInput(f"password too long: at most {PASSWORD_MAX} characters")
    if name and password.casefold() == name.casefold():
        raise BadUserInput("password must not be the user name")
    return password


def _aware(ts: datetime) -> datetime:
    """SQLite hands datetimes back naive; every stored time is UTC."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _clip(value: str, field: str) -> str:
    return value[: LIMITS[field]]


def _session_key(password_hash: str) -> str:
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


def _user(row: UserRow) -> User:
    return User(
        id=row.id,
        name=row.name,
        role=check_role(row.role),
        lots=parse_scope(row.lots, "lots"),
        stations=parse_scope(row.stations, "stations"),
        active=row.active,
        created_at=_aware(row.created_at),
        last_login_at=_aware(row.last_login_at) if row.last_login_at else None,
        session_key=_session_key(row.password_hash),
    )


def _record(row: AuditRow) -> AuditRecord:
    return AuditRecord(
        row.id, _aware(row.ts), row.username, row.action, row.target, row.detail, row.ip, row.result
    )


# -- the store --------------------------------------------------------------------------------------
class UserStore:
    """Accounts and the audit trail on the collector's database.

    ``migrate``: bring the schema to the newest revision first (safe beside a starting collector:
    migrations hold a lock). ``hasher``: argon2id with the library's defaults (64 MiB, 3 passes)
    unless given; old hashes are upgraded on the next successful login."""

    def __init__(
        self, url: str | Engine, *, migrate: bool = True, hasher: PasswordHasher | None = None
    ) -> None:
        self.engine = open_engine(url) if isinstance(url, str) else url
        self.hasher = hasher or PasswordHasher()
        if migrate:
            from cloud.migrations import upgrade

            upgrade(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    # -- accounts -----------------------------------------------------------------------------------
    def add_user(
        self,
        name: str,
        password: str,
        role: str,
        *,
        lots: str | Iterable[str] | None = None,
        stations: str | Iterable[str] | None = None,
    ) -> User:
        """A new active account. ``lots``/``stations``: None or ``"*"`` for all, else ids."""
        name, role = check_name(name), check_role(role)
        check_password(password, name)
        lot_scope, station_scope = parse_scope(lots, "lots"), parse_scope(stations, "stations")
        row = UserRow(
            name=name, password_hash=self.hasher.hash(password), role=role, lots=_scope_text(lot_scope),
            stations=_scope_text(station_scope), active=True, created_at=utc_now(),
        )  # fmt: skip
        try:
            with Session(self.engine) as s, s.begin():
                s.add(row)
                s.flush()
                return _user(row)
        except IntegrityError:
            raise UserExists(name) from None

    def set_password(self, name: str, password: str) -> User:
        """A new password; every session opened with the old one ends."""
        check_password(password, name)
        password_hash = self.hasher.hash(password)
        with Session(self.engine) as s, s.begin():
            row = self._row(s, name)
            row.password_hash = password_hash
            return _user(row)

    def set_active(self, name: str, active: bool) -> User:
        """Disable (every session ends at its next request) or enable an account."""
        with Session(self.engine) as s, s.begin():
            row = self._row(s, name)
            row.active = active
            return _user(row)

    def user(self, name: str) -> User | None:
        with Session(self.engine) as s:
            row = s.scalars(select(UserRow).where(UserRow.name == name)).one_or_none()
            return _user(row) if row else None

    def users(self) -> list[User]:
        with Session(self.engine) as s:
            return [_user(r) for r in s.scalars(select(UserRow).order_by(UserRow.name))]

    def load_session(self, session_id: str) -> User | None:
        """The user of a session id (:meth:`User.get_id`), if the account is still active and its
        password unchanged."""
        user_id, _, key = session_id.partition(":")
        if not user_id.isdigit() or not key:
            return None
        with Session(self.engine) as s:
            row = s.get(UserRow, int(user_id))
            user = _user(row) if row else None
        if user is None or not user.active or user.session_key != key:
            return None
        return user

    def authenticate(self, name: str, password: str) -> User:
        """The account, if the password is right and it is active; :class:`LoginRefused` otherwise.

        An unknown name costs the same hash as a known one, so timing does not tell which names
        exist."""
        with Session(self.engine) as s, s.begin():
            row = (
                s.scalars(select(UserRow).where(UserRow.name == name)).one_or_none()
                if NAME_RE.match(name) and len(password) <= PASSWORD_MAX
                else None
            )
            if row is None:
                self._verify(_dummy_hash(self.hasher), password)
                raise LoginRefused(name, "unknown_user")
            if not self._verify(row.password_hash, password):
                raise LoginRefused(name, "wrong_password")
            if not row.active:
                raise LoginRefused(name, "inactive")
            if self.hasher.check_needs_rehash(row.password_hash):
                row.password_hash = self.hasher.hash(password)
            row.last_login_at = utc_now()
            return _user(row)

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self.hasher.verify(password_hash, password)
        except VerifyMismatchError:
            return False
        except (VerificationError, InvalidHashError):
            logger.error("unusable password hash in the operators table; refusing the login")
            return False

    @staticmethod
    def _row(s: Session, name: str) -> UserRow:
        row = s.scalars(select(UserRow).where(UserRow.name == name)).one_or_none()
        if row is None:
            raise UnknownUser(name)
        return row

    # -- audit trail --------------------------------------------------------------------------------
    def audit(
        self,
        user: str,
        action: str,
        *,
        target: str = "",
        detail: str = "",
        ip: str = "",
        result: Result = "ok",
        at: datetime | None = None,
    ) -> AuditRecord:
        """Write one row of the audit trail (texts longer than their column are cut)."""
        row = AuditRow(
            ts=(at or utc_now()).astimezone(UTC), username=_clip(user, "user"), action=_clip(action, "action"),
            target=_clip(target, "target"), detail=_clip(detail, "detail"), ip=_clip(ip, "ip"), result=result,
        )  # fmt: skip
        with Session(self.engine) as s, s.begin():
            s.add(row)
            s.flush()
            return _record(row)

    def audit_trail(
        self,
        *,
        user: str | None = None,
        action: str | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> list[AuditRecord]:
        """The newest rows first; ``user``/``action`` filter, ``before`` (a row id) pages back."""
        query = select(AuditRow)
        if user is not None:
            query = query.where(AuditRow.username == user)
        if action is not None:
            query = query.where(AuditRow.action == action)
        if before is not None:
            query = query.where(AuditRow.id < before)
        query = query.order_by(AuditRow.id.desc()).limit(max(1, min(limit, 1000)))
        with Session(self.engine) as s:
            return [_record(r) for r in s.scalars(query)]


@functools.cache
def _dummy_hash(hasher: PasswordHasher) -> str:
    """A hash of nothing anyone types, with the store's parameters: verified for unknown names."""
    return hasher.hash("no such user: spend the same time as a real check")
