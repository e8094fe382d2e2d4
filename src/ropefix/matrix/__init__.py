"""The transformers × torch validation matrix: model (values), toxenv (tox.ini), runner, report, gha."""
