"""What both sides of the process boundary read and write, torch-free: the parent owns it as much as the ranks.

rank_report.py: a check rank's report to its parent (the way back; engine.runspec.RunSpec is the way in).
"""
