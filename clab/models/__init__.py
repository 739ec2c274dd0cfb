"""clab.models"""
