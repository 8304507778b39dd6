"""Azure Update Manager pre/post maintenance automation.

One module per concept; `function_app.py` only wires these to triggers.
"""
