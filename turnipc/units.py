"""Byte sizes and budgets: the compiler uses the runtime's one definition (:mod:`turnip.units`)."""

from turnip.units import FORMS, Budget, format_bytes, parse_budget, parse_budgets, parse_size

__all__ = ["FORMS", "Budget", "format_bytes", "parse_budget", "parse_budgets", "parse_size"]
