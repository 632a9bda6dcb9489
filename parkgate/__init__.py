"""ParkGate: the ``parkgate`` command and what its services share (config loading, MQTT link, logging)."""

__version__ = "0.1.0"
