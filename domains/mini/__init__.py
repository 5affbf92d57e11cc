"""The mini world: the embedded-default CycleQD experiment, small enough for a 2-core CPU.

Three synthetic task families (``families``) written in the shared dataset formats and run through the
real coding, OS and DB domains (same prompts' formats, parsers, sandboxes, SQL backend and judges); a
BPE tokenizer and a tiny Llama trained here from scratch (``training``); three experts and an all-data
fine-tune (``world``, the ``mini`` builder, cached by a hash of its recipe); and the experiment that
writes mini Table 1 and Table 2 (``experiment``).
"""

from domains.mini import world  # noqa: E402,F401 - registers the "mini" model-world builder
