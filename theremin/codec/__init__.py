"""Notes to text to tokens: ``midichar`` (one note = one character; the grammar lives here), ``tokenizer``
(sentencepiece BPE over midichar), ``remi`` (the MidiTok REMI baseline), ``kinds`` (the tokenizer interface and
the kinds a config picks), ``cache`` (the one way both are trained once and reused).
"""
