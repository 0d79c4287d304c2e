"""EAG-RL: Reinforcement Learning with Expert Attention Guidance for EHR reasoning in LLMs.

Stages are Hydra apps (``eagrl-data``, ...) configured from the top-level ``conf/`` tree.
"""

__version__ = "0.1.0"
