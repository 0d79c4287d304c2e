"""Stage 1 search: expert-guided MCTS over (sub-question, answer) steps and the selection of SFT trajectories."""
