"""Local simulators of the Ocean Engine and Feishu Open APIs, for the demo and the tests.

Strict where the platforms are strict: rotation kills the old refresh token, page sizes are
checked, ids are 19-digit integers, concurrent table writes conflict. Imports nothing from
``adsync.sync`` or ``adsync.bot``.
"""
