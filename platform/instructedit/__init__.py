"""InstructEdit: instruction-based knowledge editing on Ray."""

# The editing API loads lazily (PEP 562) so `import instructedit` stays light (no torch).
_API = ("load_editor", "load_method", "EditRequest", "read_requests", "EditResult", "RequestError")

__all__ = list(_API)


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'instructedit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_API))
