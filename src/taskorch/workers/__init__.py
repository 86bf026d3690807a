"""taskorch.workers"""
