"""Synthetic tasks jaxeff generates with exact answers (no downloads): ``arith`` (digit-sum reasoning)."""
