"""Alignment methods behind one Protocol (methods.base.Method), one file each, named in methods.registry.

    from methods.registry import resolve
    method = resolve("prompting")(resolve("prompting").Config())
"""
