"""Shared by the handlers in this directory."""


def total(items):
    return round(sum(item["price"] for item in items), 2)
