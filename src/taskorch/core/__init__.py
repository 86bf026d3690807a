"""taskorch.core"""
