"""analysis: reads the stored results of a study and turns them into tables, confidence intervals, figures and a report.

It reads only the results store (`<results>/cells/*.json` and the per-sample JSONL beside them) and never imports
torch, transformers, `study` or `methods`, so a report regenerates in seconds on any machine.

    from analysis.report import write_report
    summary = write_report("results/default", "reports")

Modules: `table` (load the store, with each model's identity), `metrics` (seed aggregation, bootstrap CIs, derived
metrics), `figures` (PNG figures, drawn with the helpers in `plotting`), `findings` (headline numbers and generated
sentences), `report` (REPORT.md + summary.json), `synthetic` (results stores with known answers, for tests and
benchmarks).
"""
