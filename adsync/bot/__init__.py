"""The Feishu face of adsync: webhook app, commands, cards, worker, clock, console."""
