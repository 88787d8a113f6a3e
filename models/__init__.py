"""Recommenders (SASRec baseline, LSVCR, popularity), their training, checkpoints and adapters.

Never imports `harness`: models read log tables handed to them as Arrow/pandas objects.
"""
