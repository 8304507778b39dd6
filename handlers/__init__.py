"""Azure Update Manager pre/post maintenance automation.

Laid out as the path of an event, in layers that import only downwards: `edge` (what the
functions call) → `phases` (the steps of the pre and post phases) → `runtime` (the composition
root) → `adapters` (Azure) and `ledger` (Table storage) → `core`. `function_app.py` only wires
the edge to triggers.
"""
