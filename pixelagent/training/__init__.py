"""Training infrastructure for the recipes: configs, the loop, checkpoints, distributed launch.

The recipes under ``recipes/`` are thin programs over this package (torchtune's split: the
programs are not library code, the machinery they share is).
"""
