"""One loader per public dataset layout; each returns a validated case table."""

from .derm7pt import load_derm7pt
from .synthetic import load_synthetic

__all__ = ["load_derm7pt", "load_synthetic"]
