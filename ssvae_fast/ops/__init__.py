"""M2's fused ops: one file per op, each with its plain-torch implementation and input checks."""
