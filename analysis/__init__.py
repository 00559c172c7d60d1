"""analysis: reads the stored results of a study and turns them into tables, confidence intervals, figures and a report.

It reads only the results store (`<results>/cells/*.json` and the per-sample JSONL beside them) and never imports
torch, transformers, `study` or `methods`, so a report regenerates in seconds on any machine.

    from analysis.report import write_report
    summary = write_report("results/default", "reports")

Modules: `table` (load the store, with each model's identity and organism draws), `prepare` (pool draws, set the
ceiling cells apart, behavior measure, P(fluent and desired)), `stats` (t intervals, jackknife, paired tests, Holm),
`calibration` (the simulation behind the interval rule: organisms are a random effect), `metrics` (aggregation over
replicates, derived metrics), `paired` (paired method comparisons), `figures` (PNG figures, drawn with the helpers in
`plotting`), `headline` (headline numbers and tables), `findings` (winner calls and generated sentences), `claims`
(the motivating argument's claims with corrected intervals and verdicts), `report` (REPORT.md + summary.json),
`synthetic` (results stores with known answers).
"""
