"""adsync: Ocean Engine local-push daily reports into a Feishu Bitable, with a Feishu bot."""

__version__ = "0.1.0"
