"""taskorch.server"""
