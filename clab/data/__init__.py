"""clab.data"""
