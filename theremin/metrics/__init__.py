"""Figures over notes and runs: ``notes`` (text to note arrays), ``style`` (pitch-class, interval, texture and
scalar-feature overlaps with a corpus), ``copies`` (memorisation: longest copied runs), ``sweeps`` (tables of runs).
"""
