"""Running a study (layer 6, above methods): the study config, the grid of cells, one cell start to finish, the
evaluator, the results store, local and Ray executors, the runner and its console display.

    from study.run.runner import run_study
    summary = run_study("micro", results="results/micro")
"""
