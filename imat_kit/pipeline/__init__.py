"""``imat-kit run``: the whole chain, every fold and every model, as one resumable command.

:mod:`spec` reads what to run (the command line's options or a YAML run file, checked before
anything is written), :mod:`runfile` reads a run file into a spec, :mod:`schedule` runs the (model, fold) trainings
and predictions on one device after another or one per GPU, :mod:`run` holds the run's folders
and the rule every recorded step follows, :mod:`steps` the steps after prediction (the
manifest last), :mod:`chain` their order. Every step calls the function its own ``imat-kit`` command calls.
"""
