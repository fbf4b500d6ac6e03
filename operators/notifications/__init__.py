"""Notifications about releases: what happened (message), where to (config, targets), and delivery."""
