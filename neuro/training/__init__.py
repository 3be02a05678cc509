"""Training machinery shared by the experiments: batching, memory estimates, the loop, LoRA,
checkpoints, the context a task reports through (context.py) and typed job configs and results
(records.py).
"""
