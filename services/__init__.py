"""The four zerovisor services, each its own package and its own OS process.

No service imports another; they meet only on the wire (common/).
"""
