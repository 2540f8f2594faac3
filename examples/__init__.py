"""Example environments of your own (see README, "Bring your own environment")."""
