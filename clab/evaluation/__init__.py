"""clab.evaluation"""
