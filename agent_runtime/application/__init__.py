"""Use cases (TurnHandler, session queries) and the ports they need from infrastructure."""
