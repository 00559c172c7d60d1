"""`module:attr` references, imported in one place: plugin methods, scorers, anything a config names by path.

    cls = import_attr("my_pkg.methods:ShinyMethod", what="method", attr_kind="class")
"""

from __future__ import annotations

import importlib
from typing import Any

from study.core.errors import UserError


def import_attr(spec: str, what: str = "object", attr_kind: str = "attribute") -> Any:
    """The attribute named by `module:attr` (dots allowed in attr). Any failure to import, a syntax error or an
    exception raised at import included, is one UserError line naming the spec."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UserError(f"{what} {spec!r}: expected 'module:attr'")
    try:
        obj: Any = importlib.import_module(module_name)
    except SyntaxError as exc:
        raise UserError(f"{what} {spec!r}: module '{module_name}' has a syntax error ({exc.filename}, line "
                        f"{exc.lineno}: {exc.msg})") from None
    except ImportError as exc:
        raise UserError(f"{what} {spec!r}: cannot import module '{module_name}' ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - a plugin's own code failed while importing
        raise UserError(f"{what} {spec!r}: importing module '{module_name}' raised {type(exc).__name__}: "
                        f"{' '.join(str(exc).split())[:300]}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UserError(f"{what} {spec!r}: module '{module_name}' has no {attr_kind} '{attr}'")
        obj = getattr(obj, part)
    return obj
