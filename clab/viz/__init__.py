"""clab.viz"""
