"""Config files: TOML read into pydantic models, with every error reported at once.

Every service (`parkgate edge|collector|dashboard --config FILE`) loads its file through
:func:`load_config`; a bad file raises :class:`ConfigError`, whose message lists each problem
with its location (``file:line:col`` for syntax, ``section.key`` for values), so the command can
print it and exit non-zero before anything starts.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A config file that cannot be used; ``problems`` holds one line per error."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} error(s) in config\n{lines}")


class StrictModel(BaseModel):
    """Base for config sections: unknown keys are errors, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


Port = Annotated[int, Field(ge=1, le=65535)]


class MqttSettings(StrictModel):
    """How a service reaches the MQTT broker."""

    host: str = Field("127.0.0.1", min_length=1, description="broker host name or address")
    port: Port = Field(1883, description="broker TCP port")
    username: str | None = Field(None, description="broker user name; None for anonymous")
    password_env: str | None = Field(
        None, description="name of the environment variable holding the password (never the password itself)"
    )
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive in seconds")
    topic_root: str = Field("parkgate", min_length=1, max_length=64, description="first topic level")
    tls_ca: Path | None = Field(None, description="CA certificate file; enables TLS when set")

    @model_validator(mode="after")
    def _password_needs_user(self) -> MqttSettings:
        if self.password_env and not self.username:
            raise ValueError("password_env is set but username is not")
        return self

    def password(self) -> str | None:
        """The password from the environment, or None. Raises ConfigError if the variable is unset."""
        if not self.password_env:
            return None
        value = os.environ.get(self.password_env)
        if value is None:
            raise ConfigError("environment", [f"mqtt.password_env: variable {self.password_env} is not set"])
        return value


def format_validation_error(err: ValidationError) -> list[str]:
    """One ``location: message`` line per pydantic error."""
    out = []
    for e in err.errors(include_url=False):
        loc = ".".join(str(x) for x in e["loc"]) or "(top level)"
        given = e.get("input")
        shown = f" (got {given!r})" if e["type"] != "missing" and not isinstance(given, dict | list) else ""
        out.append(f"{loc}: {e['msg']}{shown}")
    return out


def parse_config(model: type[M], data: dict[str, object], source: str = "config") -> M:
    """Validate a mapping as ``model``; raise ConfigError listing every problem."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(source, format_validation_error(err)) from None


def load_config(model: type[M], path: str | Path) -> M:
    """Read a TOML file and validate it as ``model``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(str(path), [f"cannot read file: {err.strerror or err}"]) from None
    except UnicodeDecodeError as err:
        raise ConfigError(str(path), [f"not UTF-8 text: {err}"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(str(path), [f"TOML syntax: {err}"]) from None
    return parse_config(model, data, str(path))
