"""taskorch.inference"""
