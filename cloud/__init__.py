"""The cloud collector: subscribes, validates, de-duplicates, stores, aggregates and publishes."""
