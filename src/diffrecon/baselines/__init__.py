"""diffrecon.baselines"""
