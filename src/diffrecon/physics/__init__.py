"""diffrecon.physics"""
