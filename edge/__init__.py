"""The edge node: camera frames -> plate read -> decision -> barrier -> durable outbox -> MQTT."""
