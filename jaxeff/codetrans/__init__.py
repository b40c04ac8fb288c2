"""Code translation (arXiv 2510.15004): execution-based evaluation on TransCoder-test, snippet-alignment data."""
