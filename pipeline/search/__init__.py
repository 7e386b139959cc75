"""Pure MCTS* search: see pipeline/search/protocol.py for the request/answer contract."""
