"""The error of the model registry and its adapters, in one place both can import."""

from __future__ import annotations


class RegistryError(RuntimeError):
    """A model is missing, tampered with, built from types we do not trust, or served by an
    adapter that is not installed."""
