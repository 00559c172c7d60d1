"""rlhf-vs-steering: how much human feedback each alignment method needs, and how far its behavior generalizes.

The harness is built in layers that import only downward (tests/test_layers.py keeps it so):

    study.core      errors, typed config loading, `module:attr` imports, provenance
    study.lm        model loading, hooks, generation, log-probabilities and KL, the Intervention base
    study.organism  the generated world, its exact oracle, the pretrained organism
    study.feedback  behavior targets, data-set targets, the simulated labeler, judged scores
    methods         the method API, selection, stacking, the LoRA-trainer template, one file per method
    study.run       evaluator, grid, cell, store, executors, runner, console display
    study.cli       the `study` command (`study --help`)

`analysis` stands beside the stack: it reads the results contract only, so reports regenerate without torch.
"""

__version__ = "0.1.0"
