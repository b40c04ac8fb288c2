"""Linear-self-attention theory: LSA models and closed forms, the CoT robustness bound (arXiv 2509.21284) and
GradS demonstration selection (arXiv 2508.00385)."""
