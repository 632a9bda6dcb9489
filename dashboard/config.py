"""The dashboard's config file (TOML)."""

from __future__ import annotations

from pydantic import Field

from parkgate.settings import MqttSettings, Port, StrictModel


class DashboardConfig(StrictModel):
    host: str = Field("127.0.0.1", description="address to listen on")
    port: Port = Field(8080, description="HTTP port")
    threads: int = Field(16, ge=2, le=256, description="worker threads (each live page holds one)")
    title: str = Field("ParkGate", max_length=60, description="product name in the header")
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
