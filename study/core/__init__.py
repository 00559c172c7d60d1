"""The bottom layer: errors, typed configuration, `module:attr` imports and provenance. It imports no other layer.

    from study.core.config import load_config, check      # typed YAML -> frozen dataclasses
    from study.core.errors import UserError                # one line, exit code 2
"""
