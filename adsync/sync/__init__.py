"""The domain core: configuration, storage, Ocean Engine, tokens, reports, Bitable, runs.

Nothing in here knows about chat; ``adsync.bot`` builds on it, never the other way round.
"""
