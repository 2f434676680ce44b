"""``imat-kit run``: the whole chain, every fold and every model, as one resumable command.

:mod:`spec` holds what to run (from the command line's options), :mod:`runfile` reads a YAML run
file into it (both checked before anything is written), :mod:`schedule` runs the (model, fold)
trainings and predictions on one device after another or one per GPU, :mod:`run` holds the
run's folders and the rule every recorded step follows, :mod:`steps` the steps after
prediction (the manifest last), :mod:`chain` their order. Every step calls the function its own
``imat-kit`` command calls.
"""
