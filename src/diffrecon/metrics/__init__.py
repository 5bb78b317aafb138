"""diffrecon.metrics"""
