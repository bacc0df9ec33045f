"""Training: the run driver, its callbacks, distribution and console output.

    from keras_mvs.training import driver
    driver.train_and_evaluate(config, workdir)

Modules, one job each:
    cli          the training commands' flags (`--config FILE`,
                 `--config.KEY=VALUE` through `ml_collections.config_flags`)
                 and their `main`
    config       loading, resolving and range-checking a run's config
    warm_start   `--init`: the architecture and weights of a given model
    driver       `train_and_evaluate(config, workdir)`: data, network,
                 trainer, `fit`, `model.keras`, held-out evaluation
    callbacks    the Keras callbacks of a run (NaN guard, checkpoints,
                 backup, time budget, progress bar, TensorBoard)
    backup       checks of `backup/` before a run resumes from it
    distribute   strategy selection and the multi-worker loop
                 (`distributed_fit`)
    heldout      depth on held-out scenes: at the end of a run, and of a
                 saved model (`python -m experiments.evaluate depth`)

What every command prints (quiet TensorFlow logs, stage lines, status lines,
the list of written files) is `keras_mvs.console`.

This package imports nothing at import time: `console.quiet_tensorflow`
has to run before TensorFlow is imported, and the entry points import
`keras_mvs.console` first.
"""
