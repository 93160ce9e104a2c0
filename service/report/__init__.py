"""`plateau report` (issue 15): the product's own answer to "is my model stuck in a local
minimum?". So far: the verdict rules of its five claims (rules.py)."""
