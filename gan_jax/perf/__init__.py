"""The step benchmark and what only it uses: PyTorch references, FLOP counts, profiles, HLO
reading and compile-only GPU targets. It times the trainer's own engine; nothing outside
it imports it."""
