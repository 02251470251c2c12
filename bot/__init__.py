"""The only package that knows everything: settings, wiring, entry points, adapters."""
