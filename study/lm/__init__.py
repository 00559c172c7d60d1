"""Language-model mechanics over any causal LM (layer 2, above study.core): loading, decoder blocks and hooks,
batched sampling, teacher-forced log-probabilities and KL, and the Intervention base that every method returns.

    from study.lm.models import load_model, LoadedModel
    from study.lm.generation import generate, render
    from study.lm.logprobs import sequence_logprobs, kl_divergence
    from study.lm.intervention import Intervention, Stacked
"""
