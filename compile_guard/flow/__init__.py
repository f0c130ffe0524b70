"""The parent-side check flow: a run spec, its baseline, the ranks run, the run judged and reported."""
