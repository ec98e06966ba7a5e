"""Rolling ideas: ``roller`` (Roller: prompt in, N continuations out, KV cache), ``constraints`` (grammar, key, range,
polyphony and register masks while sampling), ``callbacks`` (SampleMidi: a roll at each validation).
"""
