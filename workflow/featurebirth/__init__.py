"""featurebirth: where and when categorical SAE features are born."""
