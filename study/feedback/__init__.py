"""Feedback (layer 4, above study.organism): behavior targets and their splits, data-set targets, the simulated human
labeler that charges every label, and judged scores of candidates.

    from study.feedback.catalog import resolve_target     # "sentiment" or a data file
    from study.feedback.labeler import Labeler, Budget
    from study.feedback.judging import judged_score
"""
