"""The typed boundary between the parent and its ranks, torch-free: the parent owns it as much as the ranks.

rank_job.py: what the parent asks of a check's ranks (RankJob: the engine's RunSpec + the harness's options);
rank_report.py: what each rank reports back (RankReport: RunSummary, CompileHealth, QualityReport);
wire.py: the one reader of typed JSON (and the writer back), for these and every other typed value read from a
peer or a file.
"""
