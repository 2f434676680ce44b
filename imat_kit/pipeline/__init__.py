"""``imat-kit run``: the whole chain, every fold and every model, as one resumable command.

:mod:`spec` reads what to run (the command line's options or a YAML run file, checked before
anything is written), :mod:`schedule` runs the (model, fold) trainings and predictions on one
device after another or one per GPU, :mod:`run` drives the steps with their resume rules and
writes the run's manifest. Every step calls the function its own ``imat-kit`` command calls.
"""
