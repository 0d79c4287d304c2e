"""The stages as a library: each module's ``run(cfg)`` takes its composed entry config (``conf/<stage>.yaml``), does
the stage's work (or only reports a finished artifact, or resumes a killed one), and returns its metrics, which
hold the artifact's folder (``artifact_dir``). The ``eagrl-<stage>`` commands (:mod:`eagrl.cli`) only compose the
config and call them; a notebook or a sweep calls them directly:

    from eagrl.cli.entry import compose_entry
    from eagrl.stages import expert

    cfg = compose_entry("expert", ["dataset=tjh", "expert=retain", "paths.output_dir=logs/notebook"])
    metrics = expert.run(cfg)  # paths.output_dir: where its metrics.json is copied (Hydra sets it in a run)

``data`` (the cohort cache), ``expert``, ``mcts``, ``sft``, ``rl``, ``evaluate`` and ``pipeline`` (all of them in
order; run inside a Hydra app, since it composes every stage from the app's choices). A user-fixable problem raises
:class:`~eagrl.errors.EAGRLError` with a one-line message.
"""
