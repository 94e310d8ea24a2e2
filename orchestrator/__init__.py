"""The orchestrator: runs rounds and adds the silos' updates without seeing them."""
