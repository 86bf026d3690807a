"""taskorch.events"""
