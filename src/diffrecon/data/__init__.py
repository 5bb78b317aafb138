"""diffrecon.data"""
