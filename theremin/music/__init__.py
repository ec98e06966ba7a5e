"""MIDI in and out: ``midi`` (read, clean, write), ``scores`` (music21 scores to MIDI), ``humanize`` (performed and
sequenced copies), ``render`` (WAV through FluidSynth, piano-roll PNG).
"""
