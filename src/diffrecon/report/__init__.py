"""diffrecon.report"""
