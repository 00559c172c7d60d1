"""Alignment methods (layer 5, above study.feedback, below study.run): one Protocol (methods.base.Method), one file
per method, one registry of short names (methods.registry); the shared pieces beside them: judged selection and the
budget rule (methods.selection), stacking (methods.stacking), the LoRA-trainer template and config bases
(methods.lora_template, methods.trained).

    from methods.registry import resolve
    method = resolve("prompting")(resolve("prompting").Config())
"""
