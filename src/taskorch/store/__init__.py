"""taskorch.store"""
