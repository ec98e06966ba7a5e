"""Notes to text to tokens: ``midichar`` (one note = one character; the grammar lives here), ``tokenizer`` (sentencepiece
BPE over midichar), ``remi`` (the MidiTok REMI baseline), ``kinds`` (the tokenizer interface, the kinds a config picks,
the one training cache both use).
"""
